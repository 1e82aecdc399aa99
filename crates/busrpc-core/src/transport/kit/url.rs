//! Broker URLs fit to show: secrets masked.

/// Whether a URL option or broker-client setting named `key` holds a
/// secret (a password, a token, a private key), so that its value is never
/// shown: `sasl.password`, `ssl.key.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, `password`, `token`, ...
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

/// `url` fit for an error message or a log line: the password of its user
/// info and the value of every option that [holds a
/// secret](is_secret_option) replaced by `***`. Works on URLs the `url`
/// crate cannot parse too (`kafka://a:9092,b:9092`).
///
/// ```
/// use busrpc_core::transport::redact_url;
/// assert_eq!(
///     redact_url("redis://app:s3cr%40t@db:6379/0?prefix=x"),
///     "redis://app:***@db:6379/0?prefix=x"
/// );
/// assert_eq!(
///     redact_url("kafka://k:9092?sasl.username=u&sasl.password=p%26q"),
///     "kafka://k:9092?sasl.username=u&sasl.password=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let authority_end = base.find('/').unwrap_or(base.len());
    let (authority, path) = base.split_at(authority_end);
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    shown.push_str(user);
                    shown.push_str(":***");
                }
                // A lone user name may be a token (`redis://TOKEN@host`).
                None if scheme.is_some() && userinfo.len() > 20 => shown.push_str("***"),
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            shown.push_str(host);
        }
        None => shown.push_str(authority),
    }
    shown.push_str(path);
    if let Some(query) = query {
        shown.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                shown.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_option(key) => {
                    shown.push_str(key);
                    shown.push_str("=***");
                }
                _ => shown.push_str(pair),
            }
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://u:p@h:1/2?prefix=a", "redis://u:***@h:1/2?prefix=a"),
            ("rediss://:only-a-password@h", "rediss://:***@h"),
            ("redis://a%40b:c%3Ad@h", "redis://a%40b:***@h"),
            ("redis://user@h", "redis://user@h"),
            (
                "redis://0123456789abcdef0123456789@h",
                "redis://***@h",
            ),
            (
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=x%26y&ssl.key.password=k&ssl.key.pem=PEM&sasl.oauthbearer.client.secret=s&fetch.wait.max.ms=5",
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=***&ssl.key.password=***&ssl.key.pem=***&sasl.oauthbearer.client.secret=***&fetch.wait.max.ms=5",
            ),
            ("kafka://u:p@k:9092?x=1", "kafka://u:***@k:9092?x=1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
