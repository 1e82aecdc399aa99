//! Misuse of `#[busrpc::service]` and `Router::method` gives compile errors
//! that say what to write instead (tests/ui/*.stderr hold them), as a user
//! of the `busrpc` facade sees them.

#[test]
fn misuse_is_a_helpful_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
