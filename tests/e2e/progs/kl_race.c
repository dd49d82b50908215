/* Two threads: one connects in a loop to the address in a shared sockaddr, the other keeps
 * rewriting that address between an allowed and a denied one. `kl_race ALLOWED DENIED PORT N`
 * prints "connected C refused R". A check-then-continue supervisor lets some connects reach
 * the denied address; one that connects with its own copy never does. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in shared;
static struct in_addr good, bad;
static volatile int done;

static void *flip(void *arg) {
    (void)arg;
    while (!done) {
        ((volatile struct sockaddr_in *)&shared)->sin_addr = good;
        ((volatile struct sockaddr_in *)&shared)->sin_addr = bad;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    inet_pton(AF_INET, argv[1], &good);
    inet_pton(AF_INET, argv[2], &bad);
    shared.sin_family = AF_INET;
    shared.sin_port = htons(atoi(argv[3]));
    shared.sin_addr = good;
    int n = atoi(argv[4]), connected = 0, refused = 0;
    pthread_t t;
    pthread_create(&t, NULL, flip, NULL);
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&shared, sizeof shared) == 0) connected++;
        else if (errno == EACCES) refused++;
        close(s);
    }
    done = 1;
    pthread_join(t, NULL);
    printf("connected %d refused %d\n", connected, refused);
    return 0;
}
