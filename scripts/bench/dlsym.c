/* Workload: COUNT look-ups of NAME in libc's handle, dlsym(dlopen("libc.so.6"), NAME), as FFI
 * layers make them. NAME "getpid" is one the guard forwards untouched; "connect" one it
 * answers with its own function. With BENCH_DLSYM_SHOW=1 it prints the file that defines the
 * answer (for the benchmark's check that the guard is at work). Nothing is called. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "common.h"

int main(int argc, char **argv)
{
    const char *name = argc == 3 ? argv[2] : "getpid";
    long n = bench_count(argc == 3 ? 2 : argc, argv);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *found = NULL;
    if (!libc) {
        fprintf(stderr, "dlsym: libc.so.6 is not loaded: %s\n", dlerror());
        return 1;
    }
    for (long i = 0; i < n; i++) {
        found = dlsym(libc, name);
        if (!found) {
            fprintf(stderr, "dlsym: %s not found\n", name);
            return 1;
        }
    }
    const char *show = getenv("BENCH_DLSYM_SHOW");
    if (show && *show == '1') {
        Dl_info info;
        const char *file = dladdr(found, &info) && info.dli_fname ? info.dli_fname : "?";
        const char *slash = strrchr(file, '/');
        printf("%s\n", slash ? slash + 1 : file);
    }
    return 0;
}
