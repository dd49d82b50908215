/* A library that asks for "the next" definition of a function, as plugins and shims do:
 * loaded after the guard, so RTLD_NEXT from here skips the guard's own definition. */
#define _GNU_SOURCE
#include <dlfcn.h>

void *lookup_next(const char *name) { return dlsym(RTLD_NEXT, name); }
