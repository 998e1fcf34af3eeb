// expect-error: Duration|duration<long int
// A bare integer timeout does not say its unit (ns? ms? s?): durations are std::chrono types.
#include <fabric_shm/consumer.h>

int main() {
    auto pool = fabric_shm::Pool::open("default");
    auto consumer = fabric_shm::Consumer::open(*pool, "orders", "workers");
    fabric_shm::MessageBatch batch;
    (void)consumer->poll(batch, 64, 50'000'000);
    return 0;
}
