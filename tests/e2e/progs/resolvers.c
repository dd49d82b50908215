/* One resolver entry point per call, printing what it returned:
 *   resolvers query|search|querydomain|send|nquery|nsearch|nsend NAME  -> "ok N" | "fail h_errno=E"
 *   resolvers ghba IP        (gethostbyaddr)    -> "ok NAME" | "fail h_errno=E"
 *   resolvers ghbar IP       (gethostbyaddr_r)  -> "ok NAME" | "fail rc=R h_errno=E"
 *   resolvers gni IP [req]   (getnameinfo, NI_NAMEREQD with "req") -> "ok HOST" | "fail rc=R"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *op = argv[1], *name = argv[2];
    unsigned char answer[4096];
    int n = -2;
    if (!strcmp(op, "query")) n = res_query(name, C_IN, T_A, answer, sizeof answer);
    else if (!strcmp(op, "search")) n = res_search(name, C_IN, T_A, answer, sizeof answer);
    else if (!strcmp(op, "querydomain")) {
        /* NAME is "first.rest": query "first" in domain "rest". */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", name);
        char *dot = strchr(buf, '.');
        if (!dot) return 2;
        *dot = 0;
        n = res_querydomain(buf, dot + 1, C_IN, T_A, answer, sizeof answer);
    } else if (!strcmp(op, "send")) {
        unsigned char msg[512];
        int len = res_mkquery(QUERY, name, C_IN, T_A, NULL, 0, NULL, msg, sizeof msg);
        n = len < 0 ? -3 : res_send(msg, len, answer, sizeof answer);
    } else if (!strcmp(op, "nquery") || !strcmp(op, "nsearch") || !strcmp(op, "nsend")) {
        struct __res_state st;
        memset(&st, 0, sizeof st);
        if (res_ninit(&st) != 0) return 3;
        if (!strcmp(op, "nquery")) n = res_nquery(&st, name, C_IN, T_A, answer, sizeof answer);
        else if (!strcmp(op, "nsearch")) n = res_nsearch(&st, name, C_IN, T_A, answer, sizeof answer);
        else {
            unsigned char msg[512];
            int len = res_nmkquery(&st, QUERY, name, C_IN, T_A, NULL, 0, NULL, msg, sizeof msg);
            n = len < 0 ? -3 : res_nsend(&st, msg, len, answer, sizeof answer);
        }
    } else if (!strcmp(op, "ghba") || !strcmp(op, "ghbar")) {
        struct in_addr a;
        inet_pton(AF_INET, name, &a);
        struct hostent *h = NULL, ret;
        char buf[4096];
        int herr = 0, rc = 0;
        if (!strcmp(op, "ghba")) { h = gethostbyaddr(&a, sizeof a, AF_INET); herr = h_errno; }
        else rc = gethostbyaddr_r(&a, sizeof a, AF_INET, &ret, buf, sizeof buf, &h, &herr);
        if (h) printf("ok %s\n", h->h_name); else printf("fail rc=%d h_errno=%d\n", rc, herr);
        return 0;
    } else if (!strcmp(op, "gni")) {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        inet_pton(AF_INET, name, &sa.sin_addr);
        char host[256];
        int flags = (argc > 3 && !strcmp(argv[3], "req")) ? NI_NAMEREQD : 0;
        int rc = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, NULL, 0, flags);
        if (rc == 0) printf("ok %s\n", host); else printf("fail rc=%d\n", rc);
        return 0;
    } else return 2;
    if (n >= 0) printf("ok %d\n", n); else printf("fail h_errno=%d\n", h_errno);
    return 0;
}
