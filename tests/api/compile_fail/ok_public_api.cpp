// expect-ok
// The control: a program of public headers only compiles with the flags the misuses below get,
// and the typed forms of what they misuse (chrono durations, MonoTime, any byte container) do.
#include <fabric_shm/consumer_group.h>
#include <fabric_shm/ingest.h>
#include <fabric_shm/lease.h>
#include <fabric_shm/mem_object_store.h>
#include <fabric_shm/pool.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

using namespace std::chrono_literals;

int main() {
    auto pool = fabric_shm::Pool::open("default");
    if (!pool) return 1;
    fabric_shm::RenewalManager renewals(*pool);
    (void)renewals.tick(fabric_shm::MonoClock::now());
    auto consumer = fabric_shm::Consumer::open(*pool, "orders", "workers");
    fabric_shm::MessageBatch batch;
    if (consumer) (void)consumer->poll(batch, 64, 50ms);
    fabric_shm::PutOptions options;
    options.ttl = 5s;
    auto store = fabric_shm::MemObjectStore::open(*pool);
    const auto uri = fabric_shm::FabricUri::make("default", "b", "k").value();
    const std::vector<std::byte> bytes(4);
    if (store) (void)(*store)->put(uri, bytes, options);
    if (store) (void)(*store)->put(uri, std::string("text"));
    return 0;
}
