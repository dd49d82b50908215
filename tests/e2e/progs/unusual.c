/* Destinations the kernel reads in unusual ways.
 *   unusual send0 VIA IP PORT PAYLOAD   -> "sent N" | "errno E"
 *     (an IPv4 UDP socket; the destination's sin_family is 0 (AF_UNSPEC); VIA is sendto,
 *      sendmsg, sendmmsg or syscall)
 *   unusual dns0 IP NAME                -> "sent N" | "errno E"
 *     (a DNS question for NAME to IP:53 from an IPv4 UDP socket, sin_family 0)
 *   unusual unspec0 IP PORT PAYLOAD     -> "connect R errno E; send R errno E"
 *     (UDP connect to IP:PORT, connect with a full-length family-0 address (disconnects),
 *      then send(): ENOTCONN/EDESTADDRREQ when the disconnect happened)
 *   unusual ghba FAMILY LEN IP          -> "ok NAME" | "fail h_errno=H"   (gethostbyaddr)
 *   unusual ghbar FAMILY LEN IP         -> "ok NAME" | "fail rc=R h_errno=H" (gethostbyaddr_r)
 *     (FAMILY 4 or 6; the address is copied to a buffer of LEN bytes, zero-padded)
 *   unusual srr VIA HOP IP PORT PAYLOAD -> "setsockopt R errno E; sent N errno E"
 *     (an IPv4 UDP socket; a loose source route through HOP set with setsockopt(IP_OPTIONS)
 *      (VIA setsockopt) or given to sendmsg as an IP_RETOPTS control message (VIA cmsg))
 *   unusual rthdr VIA HOP6              -> "setsockopt R errno E" | "sent N errno E"
 *     (an IPv6 UDP socket; a segment routing header through HOP6 with setsockopt(IPV6_RTHDR),
 *      or as an IPV6_RTHDR control message to [::1]:9)
 *   unusual packet                      -> "fd" | "errno E"     (socket(AF_PACKET, SOCK_RAW))
 *   unusual hdrincl HOW HEADER_IP TO_IP PORT PAYLOAD -> "sent N" | "errno E"
 *     (a raw IPv4 socket that builds its own header: HOW is "raw" (IPPROTO_RAW) or "opt"
 *      (IPPROTO_UDP + setsockopt(IP_HDRINCL)); the header says HEADER_IP:PORT (UDP), the
 *      sendto address says TO_IP)
 *   unusual rawtcp IP PAYLOAD           -> "sent N" | "errno E"
 *     (socket(AF_INET, SOCK_RAW, IPPROTO_TCP), sendto IP: a raw socket reads as TCP)
 *   unusual join FAMILY GROUP           -> "join R errno E"
 *     (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP on a UDP socket (FAMILY 4, 6), or
 *      MCAST_JOIN_GROUP (FAMILY m4, m6), on lo)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in v4(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static ssize_t send_via(const char *via, int s, const void *buf, size_t len, struct sockaddr_in *a) {
    struct iovec iov = {(void *)buf, len};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = a;
    m.msg_namelen = sizeof *a;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (!strcmp(via, "sendto")) return sendto(s, buf, len, 0, (struct sockaddr *)a, sizeof *a);
    if (!strcmp(via, "sendmsg")) return sendmsg(s, &m, 0);
    if (!strcmp(via, "syscall"))
        return syscall(SYS_sendto, s, buf, len, 0, (struct sockaddr *)a, (socklen_t)sizeof *a);
    if (!strcmp(via, "sendmmsg")) {
        struct mmsghdr mm;
        memset(&mm, 0, sizeof mm);
        mm.msg_hdr = m;
        int n = sendmmsg(s, &mm, 1, 0);
        return n == 1 ? (ssize_t)mm.msg_len : -1;
    }
    errno = EINVAL;
    return -1;
}

static void show(ssize_t n) {
    if (n < 0) printf("errno %d\n", errno); else printf("sent %zd\n", n);
}

/* A DNS question (type A) for `name`; returns its length. */
static size_t dns_query(const char *name, unsigned char *q) {
    size_t n = 0;
    static const unsigned char head[12] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, head, 12);
    n = 12;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        q[n++] = (unsigned char)l;
        memcpy(q + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    q[n++] = 0;
    q[n++] = 0; q[n++] = 1; q[n++] = 0; q[n++] = 1;
    return n;
}

static int addr_arg(const char *fam, const char *ip, unsigned char *buf, int *af) {
    *af = !strcmp(fam, "6") ? AF_INET6 : AF_INET;
    return inet_pton(*af, ip, buf) == 1;
}

static uint16_t csum(const void *p, size_t n) {
    const uint16_t *w = p;
    uint32_t s = 0;
    for (; n > 1; n -= 2) s += *w++;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *op = argc > 1 ? argv[1] : "";
    if (!strcmp(op, "send0") && argc == 6) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[3], atoi(argv[4]));
        a.sin_family = AF_UNSPEC;
        show(send_via(argv[2], s, argv[5], strlen(argv[5]), &a));
        return 0;
    }
    if (!strcmp(op, "dns0") && argc == 4) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[2], 53);
        a.sin_family = AF_UNSPEC;
        unsigned char q[300];
        size_t n = dns_query(argv[3], q);
        show(sendto(s, q, n, 0, (struct sockaddr *)&a, sizeof a));
        return 0;
    }
    if (!strcmp(op, "unspec0") && argc == 5) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[2], atoi(argv[3]));
        int r1 = connect(s, (struct sockaddr *)&a, sizeof a), e1 = r1 ? errno : 0;
        a.sin_family = AF_UNSPEC;
        int r2 = connect(s, (struct sockaddr *)&a, sizeof a), e2 = r2 ? errno : 0;
        ssize_t n = send(s, argv[4], strlen(argv[4]), 0);
        printf("connect %d errno %d; unspec %d errno %d; send %zd errno %d\n", r1, e1, r2, e2, n,
               n < 0 ? errno : 0);
        return 0;
    }
    if ((!strcmp(op, "ghba") || !strcmp(op, "ghbar")) && argc == 5) {
        unsigned char buf[64];
        memset(buf, 0, sizeof buf);
        int af;
        if (!addr_arg(argv[2], argv[4], buf, &af)) return 2;
        int len = atoi(argv[3]);
        if (!strcmp(op, "ghba")) {
            struct hostent *h = gethostbyaddr(buf, len, af);
            if (h) printf("ok %s\n", h->h_name); else printf("fail h_errno=%d\n", h_errno);
        } else {
            struct hostent he, *res = NULL;
            char work[4096];
            int herr = 0;
            int rc = gethostbyaddr_r(buf, len, af, &he, work, sizeof work, &res, &herr);
            if (res) printf("ok %s\n", res->h_name); else printf("fail rc=%d h_errno=%d\n", rc, herr);
        }
        return 0;
    }
    if (!strcmp(op, "srr") && argc == 7) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        /* NOP, then LSRR: type 131, length 7, pointer 4, one address. */
        unsigned char opt[8] = {IPOPT_NOP, 131, 7, 4};
        inet_pton(AF_INET, argv[3], opt + 4);
        struct sockaddr_in a = v4(argv[4], atoi(argv[5]));
        int r = 0, e = 0;
        ssize_t n;
        if (!strcmp(argv[2], "setsockopt")) {
            r = setsockopt(s, IPPROTO_IP, IP_OPTIONS, opt, sizeof opt);
            e = r ? errno : 0;
            n = sendto(s, argv[6], strlen(argv[6]), 0, (struct sockaddr *)&a, sizeof a);
        } else {
            union { char buf[CMSG_SPACE(sizeof opt)]; struct cmsghdr align; } c;
            memset(&c, 0, sizeof c);
            struct iovec iov = {argv[6], strlen(argv[6])};
            struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1,
                               .msg_control = c.buf, .msg_controllen = sizeof c.buf};
            struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
            cm->cmsg_level = IPPROTO_IP;
            cm->cmsg_type = IP_RETOPTS;
            cm->cmsg_len = CMSG_LEN(sizeof opt);
            memcpy(CMSG_DATA(cm), opt, sizeof opt);
            n = sendmsg(s, &m, 0);
        }
        printf("setsockopt %d errno %d; sent %zd errno %d\n", r, e, n, n < 0 ? errno : 0);
        return 0;
    }
    if (!strcmp(op, "rthdr") && argc == 4) {
        int s = socket(AF_INET6, SOCK_DGRAM, 0);
        /* A segment routing header (type 4) with one segment. */
        unsigned char rt[24];
        memset(rt, 0, sizeof rt);
        rt[0] = IPPROTO_UDP; /* next header */
        rt[1] = 2;           /* (24 / 8) - 1 */
        rt[2] = 4;           /* type */
        rt[3] = 0;           /* segments left */
        rt[4] = 0;           /* last entry */
        inet_pton(AF_INET6, argv[3], rt + 8);
        if (!strcmp(argv[2], "setsockopt")) {
            int r = setsockopt(s, IPPROTO_IPV6, IPV6_RTHDR, rt, sizeof rt);
            printf("setsockopt %d errno %d\n", r, r ? errno : 0);
        } else {
            struct sockaddr_in6 a;
            memset(&a, 0, sizeof a);
            a.sin6_family = AF_INET6;
            a.sin6_port = htons(9);
            a.sin6_addr = in6addr_loopback;
            union { char buf[CMSG_SPACE(sizeof rt)]; struct cmsghdr align; } c;
            memset(&c, 0, sizeof c);
            struct iovec iov = {"x", 1};
            struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1,
                               .msg_control = c.buf, .msg_controllen = sizeof c.buf};
            struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
            cm->cmsg_level = IPPROTO_IPV6;
            cm->cmsg_type = IPV6_RTHDR;
            cm->cmsg_len = CMSG_LEN(sizeof rt);
            memcpy(CMSG_DATA(cm), rt, sizeof rt);
            ssize_t n = sendmsg(s, &m, 0);
            printf("sent %zd errno %d\n", n, n < 0 ? errno : 0);
        }
        return 0;
    }
    if (!strcmp(op, "packet") && argc == 2) {
        int s = socket(AF_PACKET, SOCK_RAW, htons(3 /* ETH_P_ALL */));
        if (s < 0) printf("errno %d\n", errno); else printf("fd\n");
        return 0;
    }
    if (!strcmp(op, "hdrincl") && argc == 7) {
        int s;
        if (!strcmp(argv[2], "raw")) {
            s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
        } else {
            s = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
            int one = 1;
            if (s >= 0 && setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof one)) {
                printf("setsockopt errno %d\n", errno);
                return 0;
            }
        }
        if (s < 0) {
            printf("socket errno %d\n", errno);
            return 0;
        }
        const char *payload = argv[6];
        size_t plen = strlen(payload);
        unsigned char pkt[1500];
        memset(pkt, 0, sizeof pkt);
        size_t total = 20 + 8 + plen;
        pkt[0] = 0x45;
        pkt[2] = total >> 8;
        pkt[3] = total & 0xff;
        pkt[8] = 64;
        pkt[9] = IPPROTO_UDP;
        inet_pton(AF_INET, argv[3], pkt + 16); /* destination */
        inet_pton(AF_INET, argv[3], pkt + 12); /* source: the same local address */
        int port = atoi(argv[5]);
        pkt[20] = 0x30; pkt[21] = 0x39; /* source port 12345 */
        pkt[22] = port >> 8;
        pkt[23] = port & 0xff;
        pkt[24] = (8 + plen) >> 8;
        pkt[25] = (8 + plen) & 0xff;
        memcpy(pkt + 28, payload, plen);
        uint16_t c = csum(pkt, 20);
        memcpy(pkt + 10, &c, 2);
        struct sockaddr_in a = v4(argv[4], 0);
        show(sendto(s, pkt, total, 0, (struct sockaddr *)&a, sizeof a));
        return 0;
    }
    if (!strcmp(op, "rawtcp") && argc == 4) {
        int s = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
        if (s < 0) {
            printf("socket errno %d\n", errno);
            return 0;
        }
        struct sockaddr_in a = v4(argv[2], 0);
        show(sendto(s, argv[3], strlen(argv[3]), 0, (struct sockaddr *)&a, sizeof a));
        return 0;
    }
    if (!strcmp(op, "join") && argc == 4) {
        int r;
        if (argv[2][0] == 'm') {
            int six = argv[2][1] == '6';
            int s = socket(six ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
            struct group_req g;
            memset(&g, 0, sizeof g);
            g.gr_interface = 1; /* lo */
            if (six) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&g.gr_group;
                a->sin6_family = AF_INET6;
                inet_pton(AF_INET6, argv[3], &a->sin6_addr);
            } else {
                struct sockaddr_in *a = (struct sockaddr_in *)&g.gr_group;
                a->sin_family = AF_INET;
                inet_pton(AF_INET, argv[3], &a->sin_addr);
            }
            r = setsockopt(s, six ? IPPROTO_IPV6 : IPPROTO_IP, MCAST_JOIN_GROUP, &g, sizeof g);
        } else if (!strcmp(argv[2], "6")) {
            int s = socket(AF_INET6, SOCK_DGRAM, 0);
            struct ipv6_mreq m;
            memset(&m, 0, sizeof m);
            inet_pton(AF_INET6, argv[3], &m.ipv6mr_multiaddr);
            m.ipv6mr_interface = 1; /* lo */
            r = setsockopt(s, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof m);
        } else {
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            struct ip_mreqn m;
            memset(&m, 0, sizeof m);
            inet_pton(AF_INET, argv[3], &m.imr_multiaddr);
            m.imr_ifindex = 1; /* lo */
            r = setsockopt(s, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m);
        }
        printf("join %d errno %d\n", r, r ? errno : 0);
        return 0;
    }
    return 2;
}
