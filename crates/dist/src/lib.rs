//! dawnrun-dist: gradients -> all-reduce. The only user of MPI; sees `&mut [f32]`, never a tensor.
