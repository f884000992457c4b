// The process group: MPI only under a launcher, rank/size, scalar all-reduce and its byte
// accounting, MPI errors as one-line Errors, and abort taking the whole job down. Run both
// under `mpirun -np 2` and alone (tests/CMakeLists.txt).
#include "distributed/world.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/check.h"
#include "distributed/mpi_util.h"

namespace fp8lm::dist {
namespace {

TEST(World, MpiOnlyUnderALauncher) {
  const char* env_size = std::getenv("OMPI_COMM_WORLD_SIZE");
  int initialized = 0;
  if (env_size == nullptr) {
    EXPECT_FALSE(distributed());
    EXPECT_EQ(size(), 1);
    EXPECT_EQ(rank(), 0);
    barrier();
    double v = 5.0;
    allreduce_scalars(&v, 1, ScalarOp::kSum);
    EXPECT_EQ(v, 5.0);
    EXPECT_EQ(comm_bytes().total_bytes(), 0);
    // After every call above, MPI was never started.
    MPI_Initialized(&initialized);
    EXPECT_EQ(initialized, 0);
  } else {
    EXPECT_TRUE(distributed());
    EXPECT_EQ(size(), std::atoi(env_size));
    EXPECT_EQ(rank(), std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")));
    MPI_Initialized(&initialized);
    EXPECT_EQ(initialized, 1);
  }
}

TEST(World, ScalarAllReduceAndItsBytes) {
  const int n = size(), r = rank();
  reset_comm_bytes();
  double sum[2] = {static_cast<double>(r + 1), 0.5};
  double lo[1] = {10.0 - r};
  double hi[3] = {static_cast<double>(r), -1.0 * r, 7.0};
  allreduce_scalars(sum, 2, ScalarOp::kSum);
  allreduce_scalars(lo, 1, ScalarOp::kMin);
  allreduce_scalars(hi, 3, ScalarOp::kMax);
  EXPECT_EQ(sum[0], n * (n + 1) / 2.0);
  EXPECT_EQ(sum[1], 0.5 * n);
  EXPECT_EQ(lo[0], 10.0 - (n - 1));
  EXPECT_EQ(hi[0], n - 1.0);
  EXPECT_EQ(hi[1], 0.0);
  EXPECT_EQ(hi[2], 7.0);
  const CommBytes& c = comm_bytes();
  if (n > 1) {
    EXPECT_EQ(c.bytes.at("scalar"), 6 * 8);
    EXPECT_EQ(c.calls.at("scalar"), 3);
    EXPECT_EQ(c.total_bytes(), 6 * 8);
  } else {
    EXPECT_TRUE(c.bytes.empty());
  }
  reset_comm_bytes();
  EXPECT_EQ(comm_bytes().total_bytes(), 0);
}

TEST(World, MpiErrorsBecomeOneLineErrors) {
  if (!distributed()) GTEST_SKIP() << "needs MPI";
  // Every rank makes the same invalid call (root out of range), so none waits for another.
  int value = 0;
  try {
    detail::check_mpi(MPI_Bcast(&value, 1, MPI_INT, size(), MPI_COMM_WORLD), "MPI_Bcast");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string want = "rank " + std::to_string(rank()) + " of " +
                             std::to_string(size()) + ": MPI_Bcast failed: ";
    EXPECT_EQ(std::string(e.what()).rfind(want, 0), 0u) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
  barrier();
}

// Run on its own (tests/CMakeLists.txt: dist_abort): rank 1 aborts while rank 0 waits in
// a collective that can never complete; the job must end with rank 1's message, not hang.
TEST(DistAbort, DISABLED_AbortEndsTheJob) {
  ASSERT_EQ(size(), 2);
  if (rank() == 1) abort(3, "deliberate failure for the test");
  double v = 1.0;
  allreduce_scalars(&v, 1, ScalarOp::kSum);
  ADD_FAILURE() << "the all-reduce returned although rank 1 aborted";
}

}  // namespace
}  // namespace fp8lm::dist
