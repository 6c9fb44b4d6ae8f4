//! dawnrun-data: records -> pipeline -> batches. No TensorFlow, no MPI: rank and world size arrive
//! as plain numbers.
#![deny(unsafe_code)]
