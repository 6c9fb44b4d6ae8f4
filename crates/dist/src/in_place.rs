//! `MPI_Allreduce(MPI_IN_PLACE, ...)`: the sum over ranks written over the input, as Horovod's
//! MPI path calls it. The `mpi` crate only has the two-buffer form, which costs a copy of the
//! whole buffer per call; the constant comes from `in_place.c` (built against this MPI's mpi.h).
#![allow(unsafe_code)]

use std::os::raw::c_void;

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;

extern "C" {
    fn dawnrun_mpi_in_place() -> *mut c_void;
}

/// Sums `data` element-wise over every rank of `comm`, in place. Panics when `data` holds more
/// than `i32::MAX` elements (MPI's count is an int; callers split their buffers far below it).
pub(crate) fn sum_in_place<T: Equivalence>(comm: &SimpleCommunicator, data: &mut [T]) {
    let count = i32::try_from(data.len()).expect("MPI_Allreduce count fits an int");
    // SAFETY: `data` is a live, exclusively borrowed buffer of `count` elements of the datatype
    // matching T; MPI_IN_PLACE tells MPI to read and write it. On error MPI's default handler
    // (MPI_ERRORS_ARE_FATAL) aborts the job, so the return code is always success.
    unsafe {
        mpi::ffi::MPI_Allreduce(
            dawnrun_mpi_in_place(),
            data.as_mut_ptr().cast(),
            count,
            T::equivalent_datatype().as_raw(),
            SystemOperation::sum().as_raw(),
            comm.as_raw(),
        );
    }
}
