//! Compiles `src/in_place.c`: the one MPI constant the `mpi` crate does not expose,
//! `MPI_IN_PLACE`, whose value differs between MPI implementations (Open MPI, MPICH).
fn main() {
    println!("cargo:rerun-if-changed=src/in_place.c");
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errs) => {
            for e in errs {
                println!("cargo:warning=MPI not found: {e}");
            }
            panic!("no MPI library found (install libopenmpi-dev: `make setup` does)");
        }
    };
    let mut build = cc::Build::new();
    build.file("src/in_place.c");
    match lib.mpicc {
        Some(mpicc) => {
            build.compiler(mpicc);
        }
        None => {
            for inc in &lib.include_paths {
                build.include(inc);
            }
        }
    }
    build.compile("dawnrun_in_place");
}
