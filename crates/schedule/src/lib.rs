//! dawnrun-schedule: YAML schedule file -> validated `Plan` (phases with step ranges, lr at any
//! step). The only user of serde_yaml. Pure step math, unit-tested beside the code.
#![deny(unsafe_code)]
