/* What a program sees from each network entry point of libc, one line per call:
 *   refusals ADDR TCP_PORT UDP_PORT NAME
 * connects to ADDR:TCP_PORT, sends a datagram to ADDR:UDP_PORT, looks NAME up forward and ADDR
 * backward through every resolver family. Each line holds only what the call promises its
 * caller (return value, errno where the call reports through it, h_errno, whether a result
 * came back), so that the output under the guard can be compared with the output on a host
 * without a network. errno is cleared before each call: glibc's gethostbyaddr_r returns a
 * stale errno in some failures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void clear(void) { errno = 0; h_errno = 0; }

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *addr = argv[1], *name = argv[4];
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) return 2;
    int rc;

    int s = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_port = htons(atoi(argv[2]));
    clear();
    rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    printf("connect rc=%d errno=%d\n", rc, rc ? errno : 0);
    close(s);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    sa.sin_port = htons(atoi(argv[3]));
    clear();
    rc = (int)sendto(u, "x", 1, 0, (struct sockaddr *)&sa, sizeof sa);
    printf("sendto rc=%d errno=%d\n", rc, rc < 0 ? errno : 0);
    close(u);

    struct addrinfo *ai = NULL;
    clear();
    rc = getaddrinfo(name, "80", NULL, &ai);
    printf("getaddrinfo rc=%d\n", rc);
    if (!rc) freeaddrinfo(ai);

    struct hostent *h;
    clear();
    h = gethostbyname(name);
    printf("gethostbyname found=%d h_errno=%d\n", h != NULL, h ? 0 : h_errno);
    clear();
    h = gethostbyname2(name, AF_INET6);
    printf("gethostbyname2 found=%d h_errno=%d\n", h != NULL, h ? 0 : h_errno);

    struct hostent ret;
    char buf[8192];
    int herr;
    clear();
    herr = -1;
    h = (struct hostent *)&ret;
    rc = gethostbyname_r(name, &ret, buf, sizeof buf, &h, &herr);
    printf("gethostbyname_r rc=%d found=%d herr=%d h_errno=%d\n", rc, h != NULL, herr, h_errno);
    clear();
    herr = -1;
    h = (struct hostent *)&ret;
    rc = gethostbyname2_r(name, AF_INET, &ret, buf, sizeof buf, &h, &herr);
    printf("gethostbyname2_r rc=%d found=%d herr=%d h_errno=%d\n", rc, h != NULL, herr, h_errno);

    unsigned char answer[1024];
    clear();
    rc = res_query(name, C_IN, T_A, answer, sizeof answer);
    printf("res_query rc=%d h_errno=%d\n", rc < 0 ? rc : 0, rc < 0 ? h_errno : 0);
    clear();
    rc = res_search(name, C_IN, T_A, answer, sizeof answer);
    printf("res_search rc=%d h_errno=%d\n", rc < 0 ? rc : 0, rc < 0 ? h_errno : 0);

    clear();
    h = gethostbyaddr(&sa.sin_addr, sizeof sa.sin_addr, AF_INET);
    printf("gethostbyaddr found=%d h_errno=%d\n", h != NULL, h ? 0 : h_errno);
    clear();
    herr = -1;
    h = (struct hostent *)&ret;
    rc = gethostbyaddr_r(&sa.sin_addr, sizeof sa.sin_addr, AF_INET, &ret, buf, sizeof buf, &h, &herr);
    printf("gethostbyaddr_r rc=%d found=%d herr=%d h_errno=%d\n", rc, h != NULL, herr, h_errno);

    char host[NI_MAXHOST];
    clear();
    rc = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, NULL, 0, 0);
    printf("getnameinfo rc=%d host=%s\n", rc, rc ? "-" : host);
    clear();
    rc = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, NULL, 0, NI_NAMEREQD);
    printf("getnameinfo_namereqd rc=%d\n", rc);

    /* getaddrinfo_a: the batch's status, then each request's once it is done. */
    struct gaicb req;
    struct gaicb *list[1] = {&req};
    memset(&req, 0, sizeof req);
    req.ar_name = name;
    clear();
    rc = getaddrinfo_a(GAI_WAIT, list, 1, NULL);
    printf("getaddrinfo_a_wait rc=%d errno=%d status=%d\n", rc, rc == EAI_SYSTEM ? errno : 0,
           rc == 0 ? gai_error(&req) : 0);
    memset(&req, 0, sizeof req);
    req.ar_name = name;
    clear();
    rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    int status = 0;
    if (rc == 0 || rc == EAI_AGAIN) {
        const struct gaicb *wait[1] = {&req};
        while ((status = gai_error(&req)) == EAI_INPROGRESS) gai_suspend(wait, 1, NULL);
    }
    printf("getaddrinfo_a_nowait errno=%d status=%d\n", rc == EAI_SYSTEM ? errno : 0, status);
    return 0;
}
