// expect-error: operator=|Duration|duration<long int
// Configuration durations are std::chrono types too: `ttl = 5` (seconds? ns?) does not compile.
#include <fabric_shm/object_store.h>

int main() {
    fabric_shm::PutOptions options;
    options.ttl = 5;
    return 0;
}
