// Process groups of the 3-D layout (distributed/grid.h).
#include "distributed/grid.h"

#include "core/check.h"
#include "distributed/mpi_util.h"

namespace fp8lm::dist {

std::string Grid::str() const {
  return "tp " + std::to_string(tp) + " x pp " + std::to_string(pp) + " x dp " + std::to_string(dp);
}

Grid make_grid(int tp, int pp) {
  const int world = size(), me = rank();
  if (tp < 1 || pp < 1) fail("parallel.tp = ", tp, ", parallel.pp = ", pp, ": must be >= 1");
  if (world % (tp * pp) != 0)
    fail("parallel.tp = ", tp, " x parallel.pp = ", pp, " = ", tp * pp,
         " does not divide the ", world, " rank", world == 1 ? "" : "s",
         world == 1 ? " (start with mpirun -n N, N a multiple of tp x pp)" : "");
  Grid g;
  g.tp = tp;
  g.pp = pp;
  g.dp = world / (tp * pp);
  g.tp_rank = me % tp;
  g.pp_rank = (me / tp) % pp;
  g.dp_rank = me / (tp * pp);
  if (world == 1) return g;  // every group is the world
  // Colours: ranks that share the other two coordinates; keys: the coordinate itself.
  auto split = [&](int colour, int key, const char* name) {
    MPI_Comm c = MPI_COMM_NULL;
    detail::check_mpi(MPI_Comm_split(MPI_COMM_WORLD, colour, key, &c), "MPI_Comm_split");
    return detail::add_group(c, name);
  };
  g.tp_group = split(g.dp_rank * pp + g.pp_rank, g.tp_rank, "tp");
  g.pp_group = split(g.dp_rank * tp + g.tp_rank, g.pp_rank, "pp");
  g.dp_group = split(g.pp_rank * tp + g.tp_rank, g.dp_rank, "dp");
  if (pp == 1) {
    g.stage_group = Group{};
    return g;
  }
  g.stage_group = split(g.pp_rank, g.dp_rank * tp + g.tp_rank, "stage");
  const bool ends = g.pp_rank == 0 || g.pp_rank == pp - 1;
  g.tied_group = split(ends ? g.dp_rank * tp + g.tp_rank : MPI_UNDEFINED, g.pp_rank, "pp");
  return g;
  return g;
}

}  // namespace fp8lm::dist
