// MPI start-up and shutdown, error handling, the narrow-float operators and the checked,
// accounted collectives (distributed/world.h, distributed/mpi_util.h).
#include "distributed/world.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "distributed/mpi_util.h"
#include "kernels/reduce_ops.h"

namespace fp8lm::dist {
namespace {

// One communicator of the table Group ids index.
struct GroupEntry {
  MPI_Comm comm;
  int rank, size;
  std::string name;
};

struct State {
  bool initialized = false;  // init() has run
  bool mpi = false;          // ... and started MPI
  int rank = 0;
  int size = 1;
  std::vector<GroupEntry> groups;  // [0]: the world
  MPI_Datatype e4m3 = MPI_DATATYPE_NULL;
  MPI_Datatype bf16 = MPI_DATATYPE_NULL;
  MPI_Op e4m3_sum = MPI_OP_NULL;
  MPI_Op bf16_sum = MPI_OP_NULL;
  CommBytes comm;
};
State& state() {
  static State s;
  return s;
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
}

// MPI_User_function: inout[i] = in[i] + inout[i]; `len` counts elements of our datatypes.
void e4m3_sum_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  kernels::fp8_add(DType::kE4M3, static_cast<uint8_t*>(inout), static_cast<const uint8_t*>(in),
                    static_cast<size_t>(*len));
}
void bf16_sum_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  kernels::bf16_add(static_cast<uint16_t*>(inout), static_cast<const uint16_t*>(in),
                    static_cast<size_t>(*len));
}

void make_type(int bytes, const char* name, MPI_Datatype* type) {
  detail::check_mpi(MPI_Type_contiguous(bytes, MPI_BYTE, type), "MPI_Type_contiguous");
  detail::check_mpi(MPI_Type_commit(type), "MPI_Type_commit");
  detail::check_mpi(MPI_Type_set_name(*type, name), "MPI_Type_set_name");
}

// Registered with atexit: frees our handles and shuts MPI down.
void finalize() {
  State& s = state();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Op* op : {&s.e4m3_sum, &s.bf16_sum})
    if (*op != MPI_OP_NULL) MPI_Op_free(op);
  for (MPI_Datatype* type : {&s.e4m3, &s.bf16})
    if (*type != MPI_DATATYPE_NULL) MPI_Type_free(type);
  MPI_Finalize();
}


// The liveness bound: the main thread marks each blocking MPI call; a watchdog thread ends
// the process when one has waited longer than the timeout (a peer stopped or hung), and
// mpirun then ends the job. The watchdog cannot call MPI (FUNNELED: main thread only).
struct Watchdog {
  std::atomic<int64_t> since_ns{0};  // start of the current blocking call, 0: none
  std::atomic<const char*> call{nullptr};
  std::atomic<double> timeout_s{0.0};
  std::atomic<bool> running{false};
};
Watchdog& watchdog() {
  static Watchdog w;
  return w;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void watch_loop() {
  Watchdog& w = watchdog();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t since = w.since_ns.load();
    const double limit = w.timeout_s.load();
    if (since == 0 || limit <= 0) continue;
    const double waited = static_cast<double>(now_ns() - since) * 1e-9;
    if (waited <= limit) continue;
    const State& s = state();
    std::fprintf(stderr,
                 "fp8lm: rank %d of %d: error: %s has waited %.0f s for the other ranks (one "
                 "is stopped, hung or dead; limit train.comm_timeout = %g s)\n",
                 s.rank, s.size, w.call.load(), waited, limit);
    std::fflush(stderr);
    ::_exit(1);
  }
}

// Runs one blocking MPI call under the watchdog and checks its return code.
template <typename Call>
void blocking(const char* name, Call&& call) {
  Watchdog& w = watchdog();
  w.call.store(name);
  w.since_ns.store(now_ns());
  const int rc = call();
  w.since_ns.store(0);
  detail::check_mpi(rc, name);
}

size_t type_bytes(MPI_Datatype type) {
  int bytes = 0;
  detail::check_mpi(MPI_Type_size(type, &bytes), "MPI_Type_size");
  return static_cast<size_t>(bytes);
}

int as_count(size_t count) {
  FP8LM_CHECK(count <= detail::kMaxCount, "MPI call of ", count, " elements");
  return static_cast<int>(count);
}

}  // namespace

void init() {
  State& s = state();
  if (s.initialized) return;
  if (!launched_by_mpi()) {
    s.groups = {{MPI_COMM_NULL, 0, 1, "world"}};
    s.initialized = true;
    return;
  }
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      fail("MPI_Init_thread failed");
    if (provided < MPI_THREAD_FUNNELED)
      fail("MPI provides thread level ", provided, ", fp8lm needs MPI_THREAD_FUNNELED");
    std::atexit(finalize);
  }
  s.mpi = true;
  // From here on errors come back as return codes, which check_mpi turns into Error.
  detail::check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
                    "MPI_Comm_set_errhandler");
  detail::check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &s.rank), "MPI_Comm_rank");
  detail::check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &s.size), "MPI_Comm_size");
  s.groups = {{MPI_COMM_WORLD, s.rank, s.size, "world"}};
  make_type(1, "fp8lm_e4m3", &s.e4m3);
  make_type(2, "fp8lm_bf16", &s.bf16);
  // Both sums are commutative (float32 addition is), though not associative.
  detail::check_mpi(MPI_Op_create(e4m3_sum_fn, 1, &s.e4m3_sum), "MPI_Op_create");
  detail::check_mpi(MPI_Op_create(bf16_sum_fn, 1, &s.bf16_sum), "MPI_Op_create");
  s.initialized = true;
}

bool distributed() {
  init();
  return state().mpi;
}

int rank() {
  init();
  return state().rank;
}

int size() {
  init();
  return state().size;
}

void abort(int code, std::string_view message) {
  init();
  const State& s = state();
  std::fprintf(stderr, "fp8lm: rank %d of %d: %.*s\n", s.rank, s.size,
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  if (s.mpi) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

int Group::rank() const {
  init();
  return state().groups.at(static_cast<size_t>(id_)).rank;
}

int Group::size() const {
  init();
  return state().groups.at(static_cast<size_t>(id_)).size;
}

const std::string& Group::name() const {
  init();
  return state().groups.at(static_cast<size_t>(id_)).name;
}

Group Group::from_id(int id) {
  init();
  FP8LM_CHECK(id >= 0 && static_cast<size_t>(id) < state().groups.size(), "no group ", id);
  Group g;
  g.id_ = id;
  return g;
}

void barrier(const Group& g) {
  if (g.size() == 1) return;
  blocking("MPI_Barrier", [&] { return MPI_Barrier(detail::comm(g)); });
}

void set_timeout(double seconds) {
  Watchdog& w = watchdog();
  w.timeout_s.store(seconds);
  if (seconds > 0 && distributed() && !w.running.exchange(true)) std::thread(watch_loop).detach();
}

void allreduce_scalars(double* values, size_t n, ScalarOp op, const Group& g) {
  if (g.size() == 1 || n == 0) return;
  const MPI_Op mpi_op = op == ScalarOp::kSum ? MPI_SUM : op == ScalarOp::kMin ? MPI_MIN : MPI_MAX;
  detail::allreduce(values, n, MPI_DOUBLE, mpi_op, "scalar", g);
}

void require_same(uint64_t value, const std::string& what) {
  if (size() == 1) return;
  // Two 32-bit halves, exact in doubles; equal everywhere iff min == max for both.
  double lo[2] = {static_cast<double>(value >> 32), static_cast<double>(value & 0xffffffffu)};
  double hi[2] = {lo[0], lo[1]};
  allreduce_scalars(lo, 2, ScalarOp::kMin);
  allreduce_scalars(hi, 2, ScalarOp::kMax);
  if (lo[0] != hi[0] || lo[1] != hi[1])
    fail("the ", size(), " ranks disagree on ", what, " (each rank must be started with the same one)");
}

int64_t CommBytes::total_bytes() const {
  int64_t total = 0;
  for (const auto& [kind, b] : bytes) total += b;
  return total;
}

const CommBytes& comm_bytes() { return state().comm; }
void reset_comm_bytes() { state().comm = {}; }

void send_bytes(int dest, const void* data, size_t bytes, const Group& g) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t off = 0; off < bytes || off == 0; off += detail::kMaxCount) {
    const size_t n = std::min(detail::kMaxCount, bytes - off);
    blocking("MPI_Send",
             [&] { return MPI_Send(p + off, as_count(n), MPI_BYTE, dest, 0, detail::comm(g)); });
    detail::record("p2p", n, g);
    if (bytes == 0) break;
  }
}

void recv_bytes(int src, void* data, size_t bytes, const Group& g) {
  auto* p = static_cast<uint8_t*>(data);
  for (size_t off = 0; off < bytes || off == 0; off += detail::kMaxCount) {
    const size_t n = std::min(detail::kMaxCount, bytes - off);
    blocking("MPI_Recv", [&] {
      return MPI_Recv(p + off, as_count(n), MPI_BYTE, src, 0, detail::comm(g), MPI_STATUS_IGNORE);
    });
    detail::record("p2p", n, g);
    if (bytes == 0) break;
  }
}

struct AsyncSends::Impl {
  struct Slot {
    std::vector<uint8_t> data;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::vector<Slot> slots;
  size_t staged = 0;  // the slot of the last buffer() call
};

AsyncSends::AsyncSends(Group g) : g_(g), impl_(new Impl) {}

AsyncSends::~AsyncSends() {
  try {
    wait();
  } catch (const std::exception&) {  // MPI failed: the job is ending anyway
  }
  delete impl_;
}

void* AsyncSends::buffer(size_t bytes) {
  FP8LM_CHECK(bytes <= detail::kMaxCount, "pipeline message of ", bytes, " bytes");
  size_t i = 0;
  for (; i < impl_->slots.size(); ++i) {  // a slot whose send is delivered
    auto& s = impl_->slots[i];
    if (s.request == MPI_REQUEST_NULL) break;
    int done = 0;
    detail::check_mpi(MPI_Test(&s.request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) break;
  }
  if (i == impl_->slots.size()) impl_->slots.emplace_back();
  impl_->slots[i].data.resize(bytes);
  impl_->staged = i;
  return impl_->slots[i].data.data();
}

void AsyncSends::post(int dest, int tag, const char* kind) {
  auto& s = impl_->slots.at(impl_->staged);
  FP8LM_CHECK(s.request == MPI_REQUEST_NULL, "AsyncSends::post without buffer()");
  detail::check_mpi(MPI_Isend(s.data.data(), as_count(s.data.size()), MPI_BYTE, dest, tag,
                              detail::comm(g_), &s.request),
                    "MPI_Isend");
  detail::record(kind, s.data.size(), g_);
}

void AsyncSends::wait() {
  for (auto& s : impl_->slots)
    if (s.request != MPI_REQUEST_NULL)
      blocking("MPI_Wait", [&] { return MPI_Wait(&s.request, MPI_STATUS_IGNORE); });
}

void recv_message(int src, int tag, void* data, size_t bytes, const char* kind, const Group& g) {
  FP8LM_CHECK(bytes <= detail::kMaxCount, "pipeline message of ", bytes, " bytes");
  blocking("MPI_Recv", [&] {
    return MPI_Recv(data, as_count(bytes), MPI_BYTE, src, tag, detail::comm(g), MPI_STATUS_IGNORE);
  });
  detail::record(kind, bytes, g);
}

namespace detail {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) [[likely]]
    return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  const State& s = state();
  fail("rank ", s.rank, " of ", s.size, ": ", call, " failed: ",
       len > 0 ? std::string(text, static_cast<size_t>(len)) : "error " + std::to_string(rc));
}

MPI_Datatype e4m3_type() { return state().e4m3; }
MPI_Datatype bf16_type() { return state().bf16; }
MPI_Op e4m3_sum() { return state().e4m3_sum; }
MPI_Op bf16_sum() { return state().bf16_sum; }

MPI_Comm comm(const Group& g) { return state().groups.at(static_cast<size_t>(g.id())).comm; }

Group add_group(MPI_Comm c, const char* name) {
  State& s = state();
  GroupEntry e{c, 0, 1, name};
  if (c != MPI_COMM_NULL) {
    check_mpi(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(c, &e.rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(c, &e.size), "MPI_Comm_size");
  }
  s.groups.push_back(std::move(e));
  return Group::from_id(static_cast<int>(s.groups.size() - 1));
}

void record(const char* kind, size_t bytes, const Group& g) {
  const std::string& group = g.name();
  const std::string key =
      group == "world" || group == "dp" ? std::string(kind) : group + "." + kind;
  CommBytes& c = state().comm;
  c.bytes[key] += static_cast<int64_t>(bytes);
  c.calls[key] += 1;
}

void allreduce(void* buf, size_t count, MPI_Datatype type, MPI_Op op, const char* kind,
               const Group& g) {
  blocking("MPI_Allreduce", [&] {
    return MPI_Allreduce(MPI_IN_PLACE, buf, as_count(count), type, op, comm(g));
  });
  record(kind, count * type_bytes(type), g);
}

void reduce(void* buf, size_t count, MPI_Datatype type, MPI_Op op, int root, const char* kind,
            const Group& g) {
  const bool is_root = g.rank() == root;
  blocking("MPI_Reduce", [&] {
    return MPI_Reduce(is_root ? MPI_IN_PLACE : buf, is_root ? buf : nullptr, as_count(count), type,
                      op, root, comm(g));
  });
  record(kind, count * type_bytes(type), g);
}

void bcast(void* buf, size_t count, MPI_Datatype type, int root, const char* kind,
           const Group& g) {
  blocking("MPI_Bcast", [&] { return MPI_Bcast(buf, as_count(count), type, root, comm(g)); });
  record(kind, count * type_bytes(type), g);
}

void allgather(const void* in, void* out, size_t count, MPI_Datatype type, const char* kind,
               const Group& g) {
  blocking("MPI_Allgather", [&] {
    return MPI_Allgather(in, as_count(count), type, out, as_count(count), type, comm(g));
  });
  record(kind, count * type_bytes(type) * static_cast<size_t>(g.size()), g);
}

void reduce_scatter(const void* in, void* out, size_t count, MPI_Datatype type, MPI_Op op,
                    const char* kind, const Group& g) {
  blocking("MPI_Reduce_scatter_block", [&] {
    return MPI_Reduce_scatter_block(in, out, as_count(count), type, op, comm(g));
  });
  record(kind, count * type_bytes(type) * static_cast<size_t>(g.size()), g);
}

}  // namespace detail
}  // namespace fp8lm::dist
