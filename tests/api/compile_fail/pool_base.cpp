// expect-error: has no member named .base.
// The mapping is not part of the API: no raw base pointer, header or at<T>().
#include <fabric_shm/pool.h>

int main() {
    auto pool = fabric_shm::Pool::open("default");
    return pool ? int(reinterpret_cast<long>(pool->base())) : 1;
}
