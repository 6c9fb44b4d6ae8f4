//! Gives the trainer and eval-sweep binaries an rpath to the TensorFlow C library, so they run
//! without LD_LIBRARY_PATH. The library directory comes from the `tensorflow` pkg-config package
//! (written by `make setup`, or pointing at a user's own build via LIBTENSORFLOW).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    // `make setup LIBTENSORFLOW=...` rewrites this file: relink with the new rpath.
    println!("cargo:rerun-if-changed=.deps/pkgconfig/tensorflow.pc");
    let out = Command::new("pkg-config")
        .args(["--variable=libdir", "tensorflow"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !dir.is_empty() {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
        }
        _ => println!(
            "cargo:warning=pkg-config finds no `tensorflow`: run `make setup` (binaries will need LD_LIBRARY_PATH)"
        ),
    }
}
