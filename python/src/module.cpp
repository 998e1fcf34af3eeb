// SPDX-License-Identifier: MIT
// fabric_shm._core: the compiled half of the Python package (python/fabric_shm re-exports it).
// One file per section: pools and leases, the object store, topics, groups, the worker loop.
#include "common.h"

#include "fabric_shm/version.h"

PYBIND11_MODULE(_core, m) {
    using namespace fabric_shm;
    using namespace fabric_shm::py_bind;
    m.doc() = "fabric-shm: an event pipeline (object store, topics, consumer groups, workers) in one POSIX "
              "shared-memory pool. Import the package `fabric_shm`, not this module.";
    m.attr("__version__") = std::string(library_version());
    const LayoutVersion layout = layout_version();
    m.attr("layout_version") = py::make_tuple(layout.major, layout.minor);
    bind_errors(m);
    bind_buffers(m);
    bind_pool(m);
    bind_store(m);
    bind_topics(m);
    bind_groups(m);
    bind_worker(m);
}
