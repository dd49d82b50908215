/* Reaches the network through libc's generic syscall(): SYS_connect and SYS_sendto to
 * 127.0.0.1:PORT, then a non-network syscall, which must pass through untouched. */
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
int main(int argc, char **argv){
  int port = argc > 1 ? atoi(argv[1]) : 9;
  int s=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(port); inet_pton(AF_INET,"127.0.0.1",&a.sin_addr);
  long r=syscall(SYS_connect,s,&a,sizeof a); printf("connect %ld errno %d\n",r,r<0?errno:0);
  int u=socket(AF_INET,SOCK_DGRAM,0);
  r=syscall(SYS_sendto,u,"x",1,0,&a,sizeof a); printf("sendto %ld errno %d\n",r,r<0?errno:0);
  printf("getpid ok %d\n", (long)syscall(SYS_getpid)==getpid());
  return 0;}
