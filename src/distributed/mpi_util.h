// Internal to distributed/: the MPI handles fp8lm creates (narrow-float datatypes and their sum
// operators) and the one place each collective goes through, which checks the return
// code and records the bytes passed. Public headers of distributed/ stay free of <mpi.h>.
#pragma once

#include <mpi.h>

#include <cstddef>

#include "distributed/world.h"

namespace fp8lm::dist::detail {

// Largest element count one MPI call takes (counts are int); windows stay below it.
inline constexpr size_t kMaxCount = size_t{1} << 30;

// Throws Error("rank R of N: CALL failed: <MPI's message>") unless rc is MPI_SUCCESS.
void check_mpi(int rc, const char* call);

// E4M3 codes (1 byte) and BF16 values (2 bytes) as contiguous datatypes, and their sums:
// decode both operands, add in float32, round back (E4M3 saturates, BF16 overflows to
// inf), so partial sums stay in the narrow format. Valid while MPI is initialised.
MPI_Datatype e4m3_type();
MPI_Datatype bf16_type();
MPI_Op e4m3_sum();
MPI_Op bf16_sum();

// The communicator of a group (MPI_COMM_NULL for a one-rank group made without MPI).
MPI_Comm comm(const Group& g);
// Adds a communicator to the table; returns its group.
Group add_group(MPI_Comm comm, const char* name);

// Checked, accounted collectives on `count` elements of `type`, in place, over `g`; `kind`
// names the CommBytes entry (prefixed with the group's name for tp and pp).
void allreduce(void* buf, size_t count, MPI_Datatype type, MPI_Op op, const char* kind,
               const Group& g = {});
// The result lands on `root` (a rank of g); other ranks' buffers are only read.
void reduce(void* buf, size_t count, MPI_Datatype type, MPI_Op op, int root, const char* kind,
            const Group& g = {});
void bcast(void* buf, size_t count, MPI_Datatype type, int root, const char* kind,
           const Group& g = {});
// out (g.size() × count elements, rank order) ← every rank's `in` (count elements);
// `in` may be MPI_IN_PLACE. Counted as the whole of `out`.
void allgather(const void* in, void* out, size_t count, MPI_Datatype type, const char* kind,
               const Group& g = {});
// out (count elements) ← op over the ranks of in[rank·count, (rank+1)·count).
void reduce_scatter(const void* in, void* out, size_t count, MPI_Datatype type, MPI_Op op,
                    const char* kind, const Group& g = {});
// Counts `bytes` under `kind` for group g (the one place names are prefixed).
void record(const char* kind, size_t bytes, const Group& g);

}  // namespace fp8lm::dist::detail
