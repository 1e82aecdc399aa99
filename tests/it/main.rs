//! The facade's integration tests, one binary (one link): the macro's wire
//! and compile errors, metrics, OpenTelemetry, secrets kept out of what is
//! printed, and every setting documented.

mod configuration;
mod metrics;
mod otel;
mod secrets;
// `pub`: the trait and types the macro expands from are public, as a
// service's would be.
pub mod service_macro;
