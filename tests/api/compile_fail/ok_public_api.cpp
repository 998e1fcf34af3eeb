// expect-ok
// The control: a program of public headers only compiles with the flags the misuses below get.
#include <fabric_shm/consumer_group.h>
#include <fabric_shm/lease.h>
#include <fabric_shm/mem_object_store.h>
#include <fabric_shm/pool.h>

int main() {
    auto pool = fabric_shm::Pool::open("default");
    return pool ? 0 : 1;
}
