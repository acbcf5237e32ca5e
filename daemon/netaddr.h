/*
 * netaddr.h: the TCP addresses of the control socket, as --listen and --connect take
 * them: "HOST:PORT", "[V6]:PORT", or "PORT" alone on 127.0.0.1.
 */
#ifndef LORAD_NETADDR_H
#define LORAD_NETADDR_H

#include <netdb.h>

/* Resolves AT (for a listening socket when PASSIVE) into *AI, which the caller frees
 * with freeaddrinfo; -1 with an error naming FLAG. */
int netaddr_resolve(const char *flag, const char *at, int passive, struct addrinfo **ai);

#endif
