/* A plugin for deephost.c, opened with RTLD_DEEPBIND. It defines shared_name() as the host
 * does (the plugin's own must win), and reaches the network through a PLT call (JUMP_SLOT),
 * through connect's address (GLOB_DAT), through sendto and getaddrinfo, and through its
 * dependency libdeepdep.so. Each returns 0 or an errno (getaddrinfo: its EAI code). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int dep_connect(int port);

int shared_name(void) { return 2; }

int plugin_shared(void) { return shared_name(); }

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    return a;
}

int plugin_connect(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    int rc = connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
    close(s);
    return rc;
}

/* The address of connect comes from the GOT (R_X86_64_GLOB_DAT), not the PLT. */
int (*volatile connect_ptr)(int, const struct sockaddr *, socklen_t);

int plugin_connect_ptr(int port) {
    connect_ptr = &connect;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    int rc = connect_ptr(s, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
    close(s);
    return rc;
}

int plugin_sendto(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(port);
    int rc = sendto(s, "deep", 4, 0, (struct sockaddr *)&a, sizeof a) == 4 ? 0 : errno;
    close(s);
    return rc;
}

int plugin_gai(const char *name) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, "80", &hints, &res);
    if (rc == 0) freeaddrinfo(res);
    return rc;
}

int plugin_dep_connect(int port) { return dep_connect(port); }
