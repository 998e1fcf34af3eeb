// expect-error: MonoTime|time_point<fabric_shm::MonoClock
// The recipe passed unix seconds to tick(); a monotonic instant is a type of its own now.
#include <fabric_shm/lease.h>

#include <ctime>

int main() {
    auto pool = fabric_shm::Pool::open("default");
    fabric_shm::RenewalManager renewals(*pool);
    (void)renewals.tick(uint64_t(std::time(nullptr)));
    return 0;
}
