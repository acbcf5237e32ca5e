/*
 * netaddr.c: HOST:PORT parsing and resolution (netaddr.h).
 */
#include "netaddr.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "error.h"

int netaddr_resolve(const char *flag, const char *at, int passive, struct addrinfo **ai) {
    char host[256] = "127.0.0.1", port[32];
    const char *colon = strrchr(at, ':');
    if (colon) {
        const char *h = at;
        size_t hn = (size_t)(colon - at);
        if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') h++, hn -= 2;
        snprintf(host, sizeof host, "%.*s", (int)(hn < sizeof host - 1 ? hn : sizeof host - 1), h);
    }
    snprintf(port, sizeof port, "%s", colon ? colon + 1 : at);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int e = getaddrinfo(host, port, &hints, ai);
    if (e) {
        err_set(flag, "'%s': %s", at, gai_strerror(e));
        return err_hint("HOST:PORT, [V6]:PORT, or PORT on 127.0.0.1");
    }
    return 0;
}
