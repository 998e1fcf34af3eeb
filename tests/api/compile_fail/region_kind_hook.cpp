// expect-error: .register_region_kind_ops. (was not declared|is not a member)
// Region-kind hooks (reaper, --check) are registered by the library's own modules only.
#include <fabric_shm/pool.h>

int main() {
    fabric_shm::register_region_kind_ops(fabric_shm::RegionKind::test, {});
    return 0;
}
