/* deepmain LIB PORT: dlopen(LIB, RTLD_NOW | RTLD_DEEPBIND), call deep_connect(PORT), print
 * "connected" or "errno E". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_DEEPBIND);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
    int (*deep_connect)(int) = (int (*)(int))dlsym(h, "deep_connect");
    if (!deep_connect) return 1;
    int rc = deep_connect(atoi(argv[2]));
    if (rc == 0) printf("connected\n"); else printf("errno %d\n", rc);
    return 0;
}
