/* SPDX-License-Identifier: MIT */
/*
 * What binaries built against weft.h rely on, beyond the functions' behaviour.
 *
 * The version: weft.h's WEFT_VERSION_MAJOR/MINOR/PATCH are its one definition;
 * meson.build derives the project version, weft.pc's version and the soname from
 * them (the rule is in weft.h, "Versions"), and weft_version() reports the one this
 * library was compiled with, so a program can tell the library it runs with from the
 * header it was built against. tests/check_install.sh checks that the header, this
 * function, pkg-config and the soname agree.
 */
#include "weft.h"

WEFT_API const char *weft_version(void)
{
    return WEFT_VERSION;
}
