/* MPI_IN_PLACE is a macro whose value is the implementation's own: read it where mpi.h is. */
#include <mpi.h>

void *dawnrun_mpi_in_place(void) { return MPI_IN_PLACE; }
