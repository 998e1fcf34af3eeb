// SPDX-License-Identifier: MIT
// The one doctest main (Debian's doctest ships no prebuilt main).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
