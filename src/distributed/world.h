// The ranks of a job, the groups they communicate in, and the bytes they have communicated.
// Launched by mpirun the world is MPI_COMM_WORLD; otherwise it is this process alone and no
// MPI function is ever called, so single-process commands need no launcher. MPI errors
// become fp8lm::Error naming the rank and the call. Collectives are called from the main
// thread only (MPI_THREAD_FUNNELED); kernels inside them may use OpenMP threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace fp8lm::dist {

// Starts MPI (MPI_Init_thread, FUNNELED) when the environment shows an MPI launcher
// (OMPI_COMM_WORLD_SIZE or PMIX_RANK); registers MPI_Finalize for exit. Idempotent; every
// function of distributed/ calls it, so calling it early is optional.
void init();
// True when MPI is in use (launched by mpirun, even with one rank).
bool distributed();
int rank();
int size();

// Prints "fp8lm: rank R of N: MESSAGE" on stderr and ends the whole job with `code`
// (MPI_Abort), so an error on one rank cannot leave the others waiting in a collective.
// Without MPI it prints the same line and exits the process.
[[noreturn]] void abort(int code, std::string_view message);

// A set of ranks that communicate together (an MPI communicator): the world, or one of the
// tensor-, pipeline- or data-parallel groups of a Grid (distributed/grid.h). A small handle;
// the communicator lives until exit. Every collective takes a group (default: the world).
class Group {
 public:
  Group() = default;  // the world
  int rank() const;
  int size() const;
  // "world", "tp", "pp" or "dp": traffic of the tp and pp groups is counted under
  // "tp.KIND" / "pp.KIND" (CommBytes); the world's and the dp group's under KIND.
  const std::string& name() const;
  int id() const { return id_; }  // index in the table of communicators (0: the world)
  static Group from_id(int id);

 private:
  int id_ = 0;
};

void barrier(const Group& g = {});

// Liveness bound of every blocking call (collectives, send, receive): one that waits more
// than `seconds` for the other ranks prints "fp8lm: rank R of N: error: CALL has waited …"
// and ends this process, which ends the job, so a stopped or hung rank cannot hang the
// others forever. 0 (the default) waits without bound. No effect without MPI.
void set_timeout(double seconds);

// Point-to-point bytes (checkpoints of sharded states reach rank 0 this way); both sides
// must agree on the sizes. Recorded as kind "p2p".
// `dest` and `src` are ranks within `g`.
void send_bytes(int dest, const void* data, size_t bytes, const Group& g = {});
void recv_bytes(int src, void* data, size_t bytes, const Group& g = {});

// The pipeline's messages (activations forward, their gradients backward): a send returns at
// once — a stage that blocked until its peer received would deadlock the 1F1B schedule, where
// both neighbours send before they receive. The payload is staged in a buffer of this object,
// reused once MPI has delivered it. Messages of one (peer, tag) arrive in order. Counted as
// `kind` per message (one MPI call). Buffers stay valid until wait() or destruction.
class AsyncSends {
 public:
  explicit AsyncSends(Group g);
  ~AsyncSends();  // waits for every posted send
  AsyncSends(const AsyncSends&) = delete;
  AsyncSends& operator=(const AsyncSends&) = delete;
  // A buffer of `bytes` for the next post().
  void* buffer(size_t bytes);
  // Sends the buffer of the last buffer() call to rank `dest` of the group.
  void post(int dest, int tag, const char* kind);
  // Blocks until every posted send is delivered.
  void wait();

 private:
  struct Impl;
  Group g_;
  Impl* impl_;
};
// Receives one AsyncSends message of exactly `bytes` from rank `src` of g with `tag`.
void recv_message(int src, int tag, void* data, size_t bytes, const char* kind, const Group& g);

enum class ScalarOp : uint8_t { kSum, kMin, kMax };
// values[i] = op over the ranks of values[i] (doubles: counts below 2^53 are exact).
// Recorded as kind "scalar"; with one rank, no call.
void allreduce_scalars(double* values, size_t n, ScalarOp op, const Group& g = {});

// Fails on every rank (Error) unless all ranks pass the same value: ranks started with
// different configurations would otherwise exchange buffers of different sizes or formats.
void require_same(uint64_t value, const std::string& what);

// What this rank handed to MPI, per collective kind: "allreduce_f32", "allreduce_bf16",
// "allreduce_fp8", "reduce_fp8", "allgather" (O3 weights from their owners), "scalar"
// (scales, counts), "amax" (FP8 amaxes shared by every rank); tensor-parallel traffic as "tp.allreduce_f32", "tp.allgather_e4m3", ...
// An all-gather counts the whole gathered tensor, a reduce-scatter its whole input (the
// same measure for a collective and its backward twin). bytes = count × datatype size of each call's buffer, as passed (the
// payload one rank contributes or receives, not the algorithm's wire traffic); calls = MPI
// calls. Reset per step to get per-step figures (summary.json: comm_bytes_per_step).
struct CommBytes {
  std::map<std::string, int64_t> bytes;
  std::map<std::string, int64_t> calls;
  int64_t total_bytes() const;
};
const CommBytes& comm_bytes();  // since the last reset_comm_bytes()
void reset_comm_bytes();

}  // namespace fp8lm::dist
