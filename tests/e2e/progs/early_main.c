/* early_main: linked with libearly (early_lib.c), whose constructor connects before main.
 * With -DPREINIT the program also connects from .preinit_array, which the dynamic loader runs
 * before every shared library's constructor (the guard library's included).
 * Prints {"ctor_errno":E} or {"ctor_errno":E,"preinit_errno":E2} (0: connected).
 */
#include <stdio.h>
#include <string.h>

extern int early_ctor_errno;
int early_connect(const char *port);

#ifdef PREINIT
static int preinit_errno = -1;
static void preinit(int argc, char **argv, char **envp) {
    (void)argc, (void)argv;
    /* libc is not initialised yet (getenv does not work): read the environment we are given. */
    for (char **e = envp; *e; e++)
        if (strncmp(*e, "EARLY_PORT=", 11) == 0)
            preinit_errno = early_connect(*e + 11);
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_entry)(int, char **, char **) = preinit;
#endif

int main(void) {
#ifdef PREINIT
    printf("{\"ctor_errno\":%d,\"preinit_errno\":%d}\n", early_ctor_errno, preinit_errno);
#else
    printf("{\"ctor_errno\":%d}\n", early_ctor_errno);
#endif
    return 0;
}
