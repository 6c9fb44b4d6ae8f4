//! One rank's line on stderr in one `write` call.
//!
//! Rust's stderr is unbuffered, so `eprintln!` writes each piece of its format separately, and
//! under `mpirun` the pieces of two ranks' lines interleave (`rank rank 1: ... 0: ...`): the
//! lines ranks print at the same moment (a failure, a panic, a stall) are the ones that matter
//! most. Every line a rank prints goes through [`say!`](macro@crate::say).

use std::io::Write as _;

/// Writes `line` and a newline to stderr in one call.
pub fn say_line(mut line: String) {
    line.push('\n');
    // Nothing useful can be done when stderr itself is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `eprintln!` in one `write` call (see the module).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::say_line(::std::format!($($arg)*))
    };
}
