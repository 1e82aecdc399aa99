//! The hostile-input catalogue: raw messages a broken or malicious peer with
//! access to the broker could write into a service's request queue, each
//! with the exact reply it gets, or the silence it gets.
//!
//! [`hostile_inputs_get_their_exact_answers`](crate::cases::hostile_inputs_get_their_exact_answers)
//! writes every one into a queue, through the transport as a foreign client
//! would, and after each proves the server answers a good call next. A
//! backend's own tests add what only its broker can carry (a Redis entry
//! without a `payload` field, a Kafka record with a null value).

use busrpc_core::codec::{Codec, MSGPACK};
use busrpc_core::{header, Message};

/// The request-size limit of the catalogue's server: large enough for the
/// 100,000-deep nesting cases (200,000 bytes), small enough that every
/// broker carries a message one byte over it.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a hostile message gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This exact payload (JSON; a MessagePack reply is compared as the
    /// JSON it transcodes to), in this content type (`None`: JSON, no header).
    Reply(String, Option<&'static str>),
    /// Nothing: no reply is sent to anyone reachable by the sender.
    Silence,
}

/// One hostile message.
#[derive(Clone, Debug)]
pub struct Case {
    /// What it is, for the failure message.
    pub name: String,
    /// What is written into the request queue.
    pub message: Message,
    /// What it must get.
    pub expect: Expect,
    /// How many deliveries the server settles for it: 1, or 2 when its
    /// reply goes back into the request queue.
    pub settles: u64,
}

fn reply(json: impl Into<String>) -> Expect {
    Expect::Reply(json.into(), None)
}

/// `{"jsonrpc":"2.0","error":{..},"id":ID}` with code and message.
fn error(code: i32, message: &str, id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","error":{{"code":{code},"message":"{message}"}},"id":{id}}}"#)
}

fn error_with_data(code: i32, message: &str, data: &str, id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","error":{{"code":{code},"message":"{message}","data":{data}}},"id":{id}}}"#
    )
}

fn parse_error() -> String {
    error(-32700, "Parse error", "null")
}

fn invalid(id: &str) -> String {
    error(-32600, "Invalid Request", id)
}

fn not_found(id: &str) -> String {
    error(-32601, "Method not found", id)
}

fn invalid_params(detail: &str, id: &str) -> String {
    error(-32602, &format!("Invalid params: {detail}"), id)
}

fn result(value: &str, id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","result":{value},"id":{id}}}"#)
}

/// The catalogue, for a peer whose inbox is `reply_to` and a service whose
/// request queue is `own_queue`, served by the conformance suite's router
/// with [`MAX_MESSAGE_BYTES`] and a batch limit of 1,000.
pub fn catalogue(reply_to: &str, own_queue: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, message: Message, expect: Expect| {
        cases.push(Case {
            name: name.to_owned(),
            message,
            expect,
            settles: 1,
        });
    };
    let call = |payload: Vec<u8>| Message::new(payload).with_header(header::REPLY_TO, reply_to);
    let json = |payload: &str| call(payload.as_bytes().to_vec());
    let good = r#"{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1}"#;

    // Not JSON at all, or not all of it.
    for (name, payload) in [
        ("a lone brace", "{"),
        (
            "a truncated call",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1"#,
        ),
        ("a truncated string", r#"{"jsonrpc":"2.0","method":"su"#),
        ("a lone bracket", "["),
        (
            "a truncated batch",
            r#"[{"jsonrpc":"2.0","method":"sum","params":[1],"id":1},"#,
        ),
        ("only whitespace", " \r\n\t "),
        ("a bare word", "hello"),
        ("single quotes", "{'jsonrpc':'2.0','method':'sum','id':1}"),
        (
            "a trailing comma",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1,}"#,
        ),
        (
            "a comment",
            r#"{"jsonrpc":"2.0","method":"sum","id":1} // hi"#,
        ),
        (
            "NaN",
            r#"{"jsonrpc":"2.0","method":"sum","params":[NaN],"id":1}"#,
        ),
        (
            "Infinity",
            r#"{"jsonrpc":"2.0","method":"sum","params":[Infinity],"id":1}"#,
        ),
        (
            "two calls back to back",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1}{"jsonrpc":"2.0","method":"sum","params":[2],"id":2}"#,
        ),
        (
            "garbage after a call",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1} x"#,
        ),
        (
            "an unescaped control character",
            "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"a\u{1}b\"],\"id\":1}",
        ),
        (
            "a bad escape",
            r#"{"jsonrpc":"2.0","method":"echo","params":["\q"],"id":1}"#,
        ),
        (
            "a short unicode escape",
            r#"{"jsonrpc":"2.0","method":"echo","params":["\u12"],"id":1}"#,
        ),
    ] {
        add(name, json(payload), reply(parse_error()));
    }
    add(
        "a byte-order mark before a call",
        call([b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat()),
        reply(parse_error()),
    );
    add(
        "invalid UTF-8 in a string",
        call(br#"{"jsonrpc":"2.0","method":"echo","params":["\xff\xfe"],"id":1}"#.to_vec()),
        reply(parse_error()),
    );
    add(
        "invalid UTF-8 in a member name",
        call(br#"{"jsonrpc":"2.0","method":"sum","\xc3":1,"id":1}"#.to_vec()),
        reply(parse_error()),
    );
    add(
        "a NUL byte outside a string",
        call(b"{\"jsonrpc\":\"2.0\",\0\"method\":\"sum\",\"id\":1}".to_vec()),
        reply(parse_error()),
    );
    let deep = 100_000;
    // A batch of one element that is not a request object.
    add(
        "arrays nested 100,000 deep",
        json(&format!("{}{}", "[".repeat(deep), "]".repeat(deep))),
        reply(format!("[{}]", invalid("null"))),
    );
    add(
        "params nested 100,000 deep",
        json(&format!(
            r#"{{"jsonrpc":"2.0","method":"sum","params":{}{},"id":1}}"#,
            "[".repeat(deep),
            "]".repeat(deep)
        )),
        reply(invalid_params(
            "invalid type: sequence, expected i64 at line 1 column 1",
            "1",
        )),
    );
    // An unknown member, skipped without recursing: no method.
    let deep = 40_000;
    add(
        "objects nested 40,000 deep",
        json(&format!("{}1{}", r#"{"a":"#.repeat(deep), "}".repeat(deep))),
        reply(invalid("null")),
    );

    // JSON, but not a request.
    for (name, payload) in [
        ("null", "null"),
        ("true", "true"),
        ("a number", "42"),
        ("a string", r#""{\"jsonrpc\":\"2.0\"}""#),
        ("an empty object", "{}"),
        (
            "a response instead of a request",
            r#"{"jsonrpc":"2.0","result":3,"id":null}"#,
        ),
    ] {
        add(name, json(payload), reply(invalid("null")));
    }
    for (name, payload, id) in [
        (
            "no jsonrpc member",
            r#"{"method":"sum","params":[1],"id":1}"#,
            "1",
        ),
        (
            "jsonrpc 1.0",
            r#"{"jsonrpc":"1.0","method":"sum","params":[1],"id":1}"#,
            "1",
        ),
        (
            "jsonrpc as a number",
            r#"{"jsonrpc":2.0,"method":"sum","params":[1],"id":1}"#,
            "1",
        ),
        (
            "jsonrpc null",
            r#"{"jsonrpc":null,"method":"sum","params":[1],"id":1}"#,
            "1",
        ),
        (
            "jsonrpc escaped",
            r#"{"jsonrpc":"2\u002e0","method":"sum","id":1}"#,
            "1",
        ),
        (
            "no method",
            r#"{"jsonrpc":"2.0","params":[1],"id":"m"}"#,
            r#""m""#,
        ),
        (
            "method a number",
            r#"{"jsonrpc":"2.0","method":1,"id":1}"#,
            "1",
        ),
        (
            "method null",
            r#"{"jsonrpc":"2.0","method":null,"id":1}"#,
            "1",
        ),
        (
            "method an array",
            r#"{"jsonrpc":"2.0","method":["sum"],"id":1}"#,
            "1",
        ),
        (
            "method an object",
            r#"{"jsonrpc":"2.0","method":{"name":"sum"},"id":1}"#,
            "1",
        ),
        (
            "a lone surrogate in the method",
            r#"{"jsonrpc":"2.0","method":"\ud800","id":1}"#,
            "1",
        ),
        (
            "params a string",
            r#"{"jsonrpc":"2.0","method":"sum","params":"1,2","id":1}"#,
            "1",
        ),
        (
            "params a number",
            r#"{"jsonrpc":"2.0","method":"sum","params":3,"id":1}"#,
            "1",
        ),
        (
            "params true",
            r#"{"jsonrpc":"2.0","method":"sum","params":true,"id":1}"#,
            "1",
        ),
        (
            "params null",
            r#"{"jsonrpc":"2.0","method":"sum","params":null,"id":1}"#,
            "1",
        ),
        (
            "an id that is an object",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":{"a":1}}"#,
            "null",
        ),
        (
            "an id that is an array",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":[1]}"#,
            "null",
        ),
        (
            "an id that is true",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":true}"#,
            "null",
        ),
        (
            "a duplicate member",
            r#"{"jsonrpc":"2.0","method":"sum","method":"echo","id":1}"#,
            "null",
        ),
        (
            "a duplicate id",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1,"id":2}"#,
            "null",
        ),
    ] {
        add(name, json(payload), reply(invalid(id)));
    }

    // Ids of every type and size, each echoed exactly as sent.
    let long_id = format!("\"{}\"", "i".repeat(10_000));
    for (name, id) in [
        ("a string id", r#""abc""#),
        ("an empty string id", r#""""#),
        ("an id with escapes", r#""a\"b\\c\u00e9\ud83d\ude00""#),
        ("a negative id", "-7"),
        ("a zero id", "0"),
        ("a fractional id", "1.5"),
        ("an exponent id", "1e400"),
        (
            "an id beyond u64",
            "184467440737095516161844674407370955161",
        ),
        ("a null id", "null"),
        ("a 10,000-byte id", long_id.as_str()),
    ] {
        let payload = format!(r#"{{"jsonrpc":"2.0","method":"sum","params":[2,3],"id":{id}}}"#);
        add(name, json(&payload), reply(result("5", id)));
    }

    // Methods the service does not have, and params its methods cannot take.
    for (name, method) in [
        ("an unknown method", "nope"),
        ("an empty method", ""),
        ("a reserved method", "rpc.nope"),
        ("a method differing in case", "SUM"),
        ("a method with a trailing space", "sum "),
        ("a method with a NUL", "sum\\u0000"),
    ] {
        let payload = format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":[1],"id":9}}"#);
        add(name, json(&payload), reply(not_found("9")));
    }
    let long_method = format!(
        r#"{{"jsonrpc":"2.0","method":"{}","id":9}}"#,
        "m".repeat(100_000)
    );
    add(
        "a 100,000-byte method",
        json(&long_method),
        reply(not_found("9")),
    );
    for (name, payload, detail) in [
        (
            "sum of strings",
            r#"{"jsonrpc":"2.0","method":"sum","params":["a"],"id":2}"#,
            "invalid type: string \"a\", expected i64 at line 1 column 4",
        ),
        (
            "sum of a fraction",
            r#"{"jsonrpc":"2.0","method":"sum","params":[1.5],"id":2}"#,
            "invalid type: floating point `1.5`, expected i64 at line 1 column 4",
        ),
        (
            "sum beyond i64",
            r#"{"jsonrpc":"2.0","method":"sum","params":[9223372036854775808],"id":2}"#,
            "invalid value: integer `9223372036854775808`, expected i64 at line 1 column 20",
        ),
        (
            "sum by name",
            r#"{"jsonrpc":"2.0","method":"sum","params":{"a":1},"id":2}"#,
            "invalid type: map, expected a sequence at line 1 column 0",
        ),
        (
            "echo without its argument",
            r#"{"jsonrpc":"2.0","method":"echo","params":[],"id":2}"#,
            "invalid length 0, expected a tuple of size 1 at line 1 column 2",
        ),
        (
            "echo with one argument too many",
            r#"{"jsonrpc":"2.0","method":"echo","params":["a","b"],"id":2}"#,
            "trailing characters at line 1 column 6",
        ),
        (
            "echo of null",
            r#"{"jsonrpc":"2.0","method":"echo","params":[null],"id":2}"#,
            "invalid type: null, expected a string at line 1 column 5",
        ),
        (
            "echo of a lone surrogate",
            r#"{"jsonrpc":"2.0","method":"echo","params":["\udc00"],"id":2}"#,
            "lone leading surrogate in hex escape at line 1 column 8",
        ),
        (
            "echo without params",
            r#"{"jsonrpc":"2.0","method":"echo","id":2}"#,
            "invalid type: null, expected a tuple of size 1 at line 1 column 4",
        ),
        (
            "subtract missing a member",
            r#"{"jsonrpc":"2.0","method":"subtract","params":{"minuend":3},"id":2}"#,
            "missing field `subtrahend` at line 1 column 13",
        ),
        (
            "subtract of a string",
            r#"{"jsonrpc":"2.0","method":"subtract","params":{"minuend":"3","subtrahend":1},"id":2}"#,
            "invalid type: string \"3\", expected i64 at line 1 column 14",
        ),
    ] {
        add(
            name,
            json(payload),
            reply(invalid_params(&detail.replace('"', "\\\""), "2")),
        );
    }
    add(
        "unknown members beside a call",
        json(r#"{"jsonrpc":"2.0","method":"sum","params":[4],"id":3,"extra":{"x":[1]}}"#),
        reply(result("4", "3")),
    );
    add(
        "params by name with an extra member",
        json(
            r#"{"jsonrpc":"2.0","method":"subtract","params":{"minuend":5,"subtrahend":2,"x":0},"id":3}"#,
        ),
        reply(result("3", "3")),
    );

    // Notifications: run or refused, never answered.
    for (name, payload) in [
        (
            "a notification to an unknown method",
            r#"{"jsonrpc":"2.0","method":"nope","params":[1]}"#,
        ),
        (
            "a notification with wrong params",
            r#"{"jsonrpc":"2.0","method":"sum","params":["a"]}"#,
        ),
        (
            "a notification to a reserved method",
            r#"{"jsonrpc":"2.0","method":"rpc.nope"}"#,
        ),
        (
            "a batch of notifications to unknown methods",
            r#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"b"}]"#,
        ),
    ] {
        add(name, json(payload), Expect::Silence);
    }

    // Batches.
    let invalid_null = invalid("null");
    add(
        "a batch of an empty batch",
        json("[[]]"),
        reply(format!("[{invalid_null}]")),
    );
    add(
        "a nested batch",
        json(&format!("[[{good}]]")),
        reply(format!("[{invalid_null}]")),
    );
    add(
        "a batch of null",
        json("[null]"),
        reply(format!("[{invalid_null}]")),
    );
    add(
        "a batch with an invalid notification",
        json(r#"[{"jsonrpc":"1.0","method":"sum"}]"#),
        reply(format!("[{invalid_null}]")),
    );
    add(
        "a mixed batch",
        json(&format!(
            r#"[{good},{{"jsonrpc":"2.0","method":"sum","params":[5]}},{{"jsonrpc":"2.0","method":"nope","id":"x"}},7,{{"jsonrpc":"2.0","method":"echo","params":[1],"id":"y"}}]"#
        )),
        reply(format!(
            "[{},{},{invalid_null},{}]",
            result("3", "1"),
            not_found(r#""x""#),
            invalid_params(
                "invalid type: integer `1`, expected a string at line 1 column 2",
                r#""y""#
            )
        )),
    );
    add(
        "a batch with duplicate ids",
        json(
            r#"[{"jsonrpc":"2.0","method":"sum","params":[1],"id":1},{"jsonrpc":"2.0","method":"sum","params":[2],"id":1}]"#,
        ),
        reply(format!("[{},{}]", result("1", "1"), result("2", "1"))),
    );
    add(
        "a batch with a duplicate member in one call",
        json(&format!(
            r#"[{good},{{"jsonrpc":"2.0","method":"sum","method":"x","id":2}}]"#
        )),
        reply(format!("[{},{invalid_null}]", result("3", "1"))),
    );
    add(
        "a batch with one truncated element",
        json(&format!(r#"[{good},{{"jsonrpc":"2.0","method""#)),
        reply(parse_error()),
    );
    let long_batch = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1}"#; 1001].join(",")
    );
    let too_long = error_with_data(
        -32600,
        "Invalid Request",
        r#""batch of 1001 requests exceeds this server's limit of 1000""#,
        "1",
    );
    add(
        "a batch one longer than the limit",
        json(&long_batch),
        reply(format!("[{}]", vec![too_long.as_str(); 1001].join(","))),
    );
    let full_batch = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","method":"sum","params":[1]}"#; 1000].join(",")
    );
    add(
        "a batch of 1,000 notifications",
        json(&full_batch),
        Expect::Silence,
    );

    // Size.
    let oversized = format!(
        r#"{{"jsonrpc":"2.0","method":"echo","params":["{}"],"id":1}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    add(
        "a message over the size limit",
        json(&oversized),
        reply(error_with_data(
            -32600,
            "Invalid Request",
            &format!(
                r#""message of {} bytes exceeds this server's limit of {MAX_MESSAGE_BYTES} bytes""#,
                oversized.len()
            ),
            "null",
        )),
    );
    let base = r#"{"jsonrpc":"2.0","method":"sum","params":[],"id":1}"#;
    let just_fits = format!("{base}{}", " ".repeat(MAX_MESSAGE_BYTES - base.len()));
    add(
        "a message of exactly the size limit",
        json(&just_fits),
        reply(result("0", "1")),
    );
    add(
        "an empty payload",
        json(""),
        reply(error_with_data(
            -32600,
            "Invalid Request",
            r#""the message has no payload""#,
            "null",
        )),
    );

    // Headers.
    let typed = |content_type: &str, payload: Vec<u8>| {
        call(payload).with_header(header::CONTENT_TYPE, content_type.to_owned())
    };
    for (name, content_type) in [
        ("an empty content type", ""),
        ("content type text/plain", "text/plain"),
        ("content type with only parameters", "; charset=utf-8"),
    ] {
        let quoted = serde_json::to_string(content_type).expect("a string");
        add(
            name,
            typed(content_type, good.as_bytes().to_vec()),
            reply(error_with_data(
                -32700,
                "Parse error",
                &serde_json::to_string(&format!(
                    "unsupported content type {quoted} (busrpc speaks application/json and application/msgpack)"
                ))
                .expect("a string"),
                "null",
            )),
        );
    }
    add(
        "content type in capitals with a charset",
        typed("APPLICATION/JSON; charset=utf-8", good.as_bytes().to_vec()),
        reply(result("3", "1")),
    );
    add(
        "JSON labelled MessagePack",
        typed(MSGPACK, good.as_bytes().to_vec()),
        Expect::Reply(
            error_with_data(
                -32700,
                "Parse error",
                &format!(
                    r#""payload is not valid MessagePack: trailing bytes after the value ({} of {})""#,
                    good.len() - 1,
                    good.len()
                ),
                "null",
            ),
            Some(MSGPACK),
        ),
    );
    for (name, deadline) in [
        ("an empty deadline", ""),
        ("a deadline with a space", " 99999999999999"),
        ("a deadline in seconds with a fraction", "1700000000.5"),
        ("a deadline beyond u64", "18446744073709551616"),
    ] {
        let quoted = serde_json::to_string(deadline)
            .expect("a string")
            .replace('"', "\\\"");
        add(
            name,
            json(good).with_header(header::DEADLINE, deadline.to_owned()),
            reply(error_with_data(
                -32600,
                "Invalid Request",
                &format!(
                    r#""the deadline header {quoted} is not a Unix time in milliseconds (digits only, at most 18446744073709551615)""#
                ),
                "1",
            )),
        );
    }
    add(
        "a deadline long past",
        json(good).with_header(header::DEADLINE, "1"),
        Expect::Silence,
    );
    add(
        "a deadline of zero",
        json(good).with_header(header::DEADLINE, "0"),
        Expect::Silence,
    );
    add(
        "a deadline in the far future",
        json(good).with_header(header::DEADLINE, "18446744073709551615"),
        reply(result("3", "1")),
    );
    add(
        "a garbage traceparent",
        json(good).with_header(header::TRACEPARENT, "\u{0}not-a-trace\u{7f}"),
        reply(result("3", "1")),
    );
    let mut many_headers = json(good);
    for i in 0..100 {
        many_headers = many_headers.with_header(format!("x-header-{i}"), "v".repeat(100));
    }
    add(
        "a hundred unknown headers",
        many_headers,
        reply(result("3", "1")),
    );
    add(
        "a call without a reply-to",
        Message::new(good),
        Expect::Silence,
    );
    add(
        "an empty reply-to",
        Message::new(good).with_header(header::REPLY_TO, ""),
        Expect::Silence,
    );
    add(
        "a reply-to naming a queue nobody serves",
        Message::new(good).with_header(header::REPLY_TO, format!("{own_queue}-nobody")),
        Expect::Silence,
    );
    add(
        "a reply-to that is no address",
        Message::new(good).with_header(header::REPLY_TO, "not/an address: \u{1f600}*"),
        Expect::Silence,
    );
    cases.push(Case {
        name: "a reply-to naming the service's own queue".to_owned(),
        message: Message::new(good).with_header(header::REPLY_TO, own_queue.to_owned()),
        expect: Expect::Silence,
        // The reply lands in the request queue, is read as a request
        // without a reply-to, and is dropped: no loop.
        settles: 2,
    });
    add_msgpack(&mut cases, reply_to);
    cases
}

/// The MessagePack cases: transcoding's own failure modes.
fn add_msgpack(cases: &mut Vec<Case>, reply_to: &str) {
    let packed = |payload: Vec<u8>| {
        Message::new(payload)
            .with_header(header::REPLY_TO, reply_to)
            .with_header(header::CONTENT_TYPE, MSGPACK)
    };
    let mut add = |name: &str, payload: Vec<u8>, json: String| {
        cases.push(Case {
            name: name.to_owned(),
            message: packed(payload),
            expect: Expect::Reply(json, Some(MSGPACK)),
            settles: 1,
        });
    };
    let good = Codec::MessagePack
        .encode(br#"{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1}"#.to_vec())
        .expect("packs");
    let invalid_msgpack = |reason: &str| {
        error_with_data(
            -32700,
            "Parse error",
            &format!(r#""payload is not valid MessagePack: {reason}""#),
            "null",
        )
    };
    add("a MessagePack call", good.clone(), result("3", "1"));
    add(
        "truncated MessagePack",
        good[..good.len() - 3].to_vec(),
        invalid_msgpack("IO error while reading data: unexpected end of file"),
    );
    add(
        "a reserved MessagePack marker",
        vec![0xc1],
        invalid_msgpack("wrong msgpack marker Reserved"),
    );
    // fixarray of one, 100,000 times, around a nil.
    let mut deep = vec![0x91; 100_000];
    deep.push(0xc0);
    add(
        "MessagePack nested 100,000 deep",
        deep,
        invalid_msgpack("depth limit exceeded"),
    );
    // A map keyed by an integer: JSON has it as a string, "1".
    add(
        "a MessagePack map with an integer key",
        vec![0x81, 0x01, 0x02],
        invalid("null"),
    );
    // A map keyed by an array: no JSON for that.
    add(
        "a MessagePack map with an array key",
        vec![0x81, 0x90, 0x02],
        invalid_msgpack("key must be a string"),
    );
    // array32 declaring 4 billion elements, then nothing.
    add(
        "a MessagePack array claiming 4 billion elements",
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],
        invalid_msgpack("IO error while reading marker: failed to fill whole buffer"),
    );
    // str32 declaring 4 GiB, then three bytes.
    add(
        "a MessagePack string claiming 4 GiB",
        vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c'],
        invalid_msgpack("IO error while reading data: unexpected end of file"),
    );
    add("a MessagePack nil", vec![0xc0], invalid("null"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_has_a_name_of_its_own() {
        let cases = catalogue("inbox", "queue");
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name is used twice");
    }
}
