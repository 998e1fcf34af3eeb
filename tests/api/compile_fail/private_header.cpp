// expect-error: fabric_shm private header
// A program outside the library includes a private header (here with the private include
// directory on its path, as a careless build file would put it).
#include "pool_impl.h"

int main() { return 0; }
