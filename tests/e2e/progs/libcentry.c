/* Calls one libc network entry point and prints what it returned, so that tests can check
 * the gethostbyname family, sendmsg, sendmmsg and TCP Fast Open under the guard.
 *   libcentry ghbn|ghbn2|ghbnr|ghbn2r NAME     -> "ok ADDR" | "fail h_errno=N [rc=R]"
 *   libcentry sendmsg IP PORT PAYLOAD          -> "sent N" | "errno E"
 *   libcentry sendmmsg PAYLOAD IP:PORT...      -> "ret N errno E"
 *   libcentry tfo IP PORT                      -> "sent N" | "errno E"
 *   libcentry unspec IP PORT                   -> "connect R errno E; unspec R errno E"
 *     (UDP connect to IP:PORT, then connect(AF_UNSPEC) to dissolve the association)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void show_host(struct hostent *h, int herr, int rc) {
    if (h && h->h_addr_list[0]) {
        char buf[64];
        inet_ntop(h->h_addrtype, h->h_addr_list[0], buf, sizeof buf);
        printf("ok %s\n", buf);
    } else {
        printf("fail h_errno=%d rc=%d\n", herr, rc);
    }
}

static struct sockaddr_in v4(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *op = argv[1];
    if (!strncmp(op, "ghbn", 4)) {
        struct hostent *h = NULL, ret;
        char buf[4096];
        int herr = 0, rc = 0;
        if (!strcmp(op, "ghbn")) { h = gethostbyname(argv[2]); herr = h_errno; }
        else if (!strcmp(op, "ghbn2")) { h = gethostbyname2(argv[2], AF_INET); herr = h_errno; }
        else if (!strcmp(op, "ghbnr")) rc = gethostbyname_r(argv[2], &ret, buf, sizeof buf, &h, &herr);
        else if (!strcmp(op, "ghbn2r")) rc = gethostbyname2_r(argv[2], AF_INET, &ret, buf, sizeof buf, &h, &herr);
        else return 2;
        show_host(h, herr, rc);
        return 0;
    }
    if (!strcmp(op, "sendmsg") && argc == 5) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[2], atoi(argv[3]));
        struct iovec iov = {argv[4], strlen(argv[4])};
        struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = sendmsg(s, &m, 0);
        if (n < 0) printf("errno %d\n", errno); else printf("sent %zd\n", n);
        return 0;
    }
    if (!strcmp(op, "sendmmsg") && argc >= 4 && argc - 3 <= 8) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        int k = argc - 3;
        struct sockaddr_in addrs[8];
        struct iovec iov[8];
        struct mmsghdr msgs[8];
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < k; i++) {
            char ip[64];
            snprintf(ip, sizeof ip, "%s", argv[3 + i]);
            char *colon = strchr(ip, ':');
            if (!colon) return 2;
            *colon = 0;
            addrs[i] = v4(ip, atoi(colon + 1));
            iov[i].iov_base = argv[2];
            iov[i].iov_len = strlen(argv[2]);
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        errno = 0;
        int n = sendmmsg(s, msgs, k, 0);
        printf("ret %d errno %d\n", n, n < 0 ? errno : 0);
        return 0;
    }
    if (!strcmp(op, "unspec") && argc == 4) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[2], atoi(argv[3]));
        errno = 0;
        int r1 = connect(s, (struct sockaddr *)&a, sizeof a), e1 = r1 ? errno : 0;
        struct sockaddr u;
        memset(&u, 0, sizeof u);
        u.sa_family = AF_UNSPEC;
        int r2 = connect(s, &u, sizeof u), e2 = r2 ? errno : 0;
        printf("connect %d errno %d; unspec %d errno %d\n", r1, e1, r2, e2);
        return 0;
    }
    if (!strcmp(op, "tfo") && argc == 4) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = v4(argv[2], atoi(argv[3]));
        ssize_t n = sendto(s, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a);
        if (n < 0) printf("errno %d\n", errno); else printf("sent %zd\n", n);
        return 0;
    }
    return 2;
}
