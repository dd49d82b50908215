/* early_lib: a shared library whose constructor connects, and a .preinit_array entry for the
 * program (early_main.c) that does the same before any shared library's constructor.
 *
 * EARLY_PORT (environment): the loopback port to connect to. early_main prints the results.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int early_ctor_errno = -1;

/* One TCP connect to 127.0.0.1:atoi(port); 0 or the errno. */
int early_connect(const char *port) {
    if (!port)
        return -2;
    const char *p = port;
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)atoi(p));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -3;
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int err = rc == 0 ? 0 : errno;
    close(fd);
    return err;
}

__attribute__((constructor)) static void early_ctor(void) { early_ctor_errno = early_connect(getenv("EARLY_PORT")); }
