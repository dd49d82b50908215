/* Workload (c): COUNT getaddrinfo("localhost") lookups, each result freed. "localhost" is
 * answered from /etc/hosts (or glibc's built-in rule): no query leaves the host. */
#include <netdb.h>
#include <sys/socket.h>

#include "common.h"

int main(int argc, char **argv)
{
    long n = bench_count(argc, argv);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (long i = 0; i < n; i++) {
        struct addrinfo *res = NULL;
        int rc = getaddrinfo("localhost", "80", &hints, &res);
        if (rc != 0) {
            fprintf(stderr, "gai: getaddrinfo(localhost): %s\n", gai_strerror(rc));
            return 1;
        }
        freeaddrinfo(res);
    }
    return 0;
}
