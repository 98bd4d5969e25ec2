/*
 * weft_native: the part of Weft's data plane that Node cannot do itself (Linux only).
 *
 *   tunOpen(name, mode, multiQueue, vnetHdr) -> { fd, name }   open /dev/net/tun + TUNSETIFF
 *   tunSetOffload(fd, flags), tunSetVnetHdrSize(fd, size)      TUNSETOFFLOAD / TUNSETVNETHDRSZ
 *   udpOpen(bindAddr, port, rcvbuf, sndbuf, offload)            non-blocking UDP/IPv4 socket, DF set
 *     -> { fd, port, gso, gro }                                 (UDP_SEGMENT / UDP_GRO available)
 *   pathMtu(addr) -> mtu | -errno                              the kernel's path MTU to addr (IP_MTU)
 *   segmentTcp4(...)                                           TSO in software (see below)
 *   socketBuffers(fd) -> { rcvbuf, sndbuf }                    kernel buffer sizes in effect
 *   watch(fd, cb) -> handle, unwatch(handle), activeWatchers() libuv readiness (UV_READABLE)
 *   readBatch / writeBatch                                     read()/write() loops (TUN fd)
 *   recvBatch / sendBatch                                      recvmmsg()/sendmmsg() (UDP fd),
 *                                                              with UDP GRO / GSO sizes per datagram
 *   udp6Open(port, device, rcvbuf, sndbuf)                     non-blocking UDP/IPv6 socket and
 *     -> { fd, port, ifindex }                                 the device's index (see "UDP over IPv6")
 *   recvBatch6 / sendBatch6                                    recvmmsg()/sendmmsg() with IPv6
 *                                                              addresses and numeric scopes
 *   close(fd) -> 0 | -errno
 *   nlOpen() -> fd                                             blocking NETLINK_ROUTE socket, 1 s
 *                                                              receive timeout (router/kernel/)
 *   nlSend(fd, buf, len) -> len | -errno, nlRecv(fd, buf) -> n | -errno
 *                                                              one netlink datagram each way;
 *                                                              nlRecv returns -EAGAIN on timeout
 *   aeadKey / aeadFree / aeadSeal / aeadOpen / aeadSealBatch / aeadOpenBatch
 *                                                              AES-256-GCM and ChaCha20-Poly1305 in
 *                                                              place, one packet or a batch (see "AEAD")
 *
 * Ownership: every Buffer and typed array argument is borrowed only for the duration of the
 * call; nothing is retained once a function returns. The one exception is watch(), which holds
 * a strong reference to its callback until unwatch() or until the handle is garbage collected.
 *
 * Slots: batch reads place item i at buf[offset + i*stride]. Its room is stride - offset%stride
 * (the rest of its stride-aligned slot, so the headroom at the start of the next slot is never
 * overwritten), cut at the end of buf. Every slot must start inside buf. An item that did not
 * fit its room is reported with length -1; the bytes in its slot are then meaningless.
 *
 * Errors: misuse (wrong types, out-of-bounds offsets or counts) throws a TypeError; it is a
 * programming error. Open and setup failures throw an Error whose `code` is the errno name
 * ('ENOENT'), `errno` is -errno (as in Node) and `syscall` the failed call. Per-packet I/O
 * never throws:
 *   readBatch  returns the count read; stops at EAGAIN; retries EINTR; any other error ends the
 *              batch and returns the count so far, or -errno when nothing was read.
 *   recvBatch  the same rules (recvmmsg reports an error met after some datagrams on the next
 *              call).
 *   writeBatch returns how many packets the kernel accepted. It stops at EAGAIN/ENOBUFS (queue
 *              full: the rest are the caller's drops) and at errors about the fd itself (EBADF,
 *              EBADFD). Any other error (EINVAL for a non-IP packet on a TUN, EIO while the link
 *              is down, EMSGSIZE...) skips that packet only and the loop goes on.
 *   sendBatch  returns how many datagrams the kernel accepted, with the same rules: stop at
 *              EAGAIN/ENOBUFS/EBADF/ENOTSOCK, skip a datagram whose destination fails
 *              (EMSGSIZE, ENETUNREACH, EPERM, ECONNREFUSED, EINVAL for port 0...).
 *
 * Threads: the recvmmsg/sendmmsg scratch arrays are thread-local and hold MMSG_CHUNK items, so
 * no call allocates and each worker thread may load the addon. Larger batches are chunked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/udp.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <sys/time.h>
#include <linux/virtio_net.h>
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h> /* Node's own OpenSSL: the symbols come from the node binary */
#include <uv.h>

#define MMSG_CHUNK 256
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
/* UDP_GSO_SEGMENTS_MAX is the kernel's UDP_MAX_SEGMENTS on every kernel that has UDP GSO (some
 * newer ones allow 128): a train longer than this is refused with EINVAL. */
#define UDP_GSO_SEGMENTS_MAX 64
/* CTRL_BYTES is room for one UDP_GRO / UDP_SEGMENT control message (an int). */
#define CTRL_BYTES CMSG_SPACE(sizeof(int))
#define WATCH_MAGIC 0x77656674u /* "weft" */

static __thread struct mmsghdr t_msgs[MMSG_CHUNK];
static __thread struct iovec t_iovs[MMSG_CHUNK];
static __thread struct sockaddr_in t_names[MMSG_CHUNK];
static __thread union {
  char buf[CTRL_BYTES];
  struct cmsghdr align;
} t_ctrl[MMSG_CHUNK];
static __thread int t_active_watchers; /* uv_poll handles started and not yet closed */

/* ---- errors ---- */

static const char *errno_name(int e) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(ENXIO) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES)
    E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ENOSPC)
    E(ENOSYS) E(EBADFD) E(ENOTSOCK) E(EMSGSIZE) E(EPROTONOSUPPORT) E(EOPNOTSUPP)
    E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ENOBUFS)
    E(ECONNREFUSED) E(EHOSTUNREACH)
#undef E
    default: return "EUNKNOWN";
  }
}

static const char *errno_text(int e, char *tmp, size_t n) {
#if defined(__GLIBC__)
  return strerror_r(e, tmp, n);
#else
  if (strerror_r(e, tmp, n) != 0) snprintf(tmp, n, "errno %d", e);
  return tmp;
#endif
}

/* throw_errno throws Error("<what>: <strerror>") with code, errno and syscall set. */
static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *fmt, ...) {
  char what[192], msg[320], tmp[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(msg, sizeof msg, "%s: %s", what, errno_text(e, tmp, sizeof tmp));
  napi_value code, message, err, v;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &err);
  napi_create_int32(env, -e, &v);
  napi_set_named_property(env, err, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  napi_throw(env, err);
  return NULL;
}

static bool throw_type(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  return false;
}

/* ---- argument helpers (all cheap; they run once per batch) ---- */

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv,
                     const char *fn) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) return throw_type(env, "%s: expected %zu arguments, got %zu", fn, want, argc);
  return true;
}

static bool get_int(napi_env env, napi_value v, int64_t lo, int64_t hi, int64_t *out,
                    const char *fn, const char *name) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= (double)lo && d <= (double)hi) ||
      d != (double)(int64_t)d)
    return throw_type(env, "%s: %s must be an integer in [%lld, %lld]", fn, name, (long long)lo,
                      (long long)hi);
  *out = (int64_t)d;
  return true;
}

static bool get_fd(napi_env env, napi_value v, int *fd, const char *fn) {
  int64_t x;
  if (!get_int(env, v, 0, INT32_MAX, &x, fn, "fd")) return false;
  *fd = (int)x;
  return true;
}

static bool get_buf(napi_env env, napi_value v, uint8_t **data, size_t *len, const char *fn) {
  void *d = NULL;
  size_t n = 0;
  if (napi_get_buffer_info(env, v, &d, &n) != napi_ok)
    return throw_type(env, "%s: buf must be a Buffer", fn);
  *data = d;
  *len = n;
  return true;
}

static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data,
                      size_t *len, const char *fn, const char *what) {
  bool is = false;
  napi_typedarray_type t;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) != napi_ok || t != want)
    return throw_type(env, "%s: %s", fn, what);
  return true;
}

/* check_slots: slots 0..max-1 at off + i*stride must each start inside buf. */
static bool check_slots(napi_env env, const char *fn, size_t buflen, int64_t off, int64_t stride,
                        int64_t max) {
  if (max > 0 && ((uint64_t)off >= buflen ||
                  (uint64_t)(max - 1) > ((uint64_t)buflen - 1 - (uint64_t)off) / (uint64_t)stride))
    return throw_type(env, "%s: %lld slots of %lld bytes from offset %lld do not fit a %zu-byte buffer",
                      fn, (long long)max, (long long)stride, (long long)off, buflen);
  return true;
}

/* check_spans: count <= array lengths and every [off, off+len) lies inside buf. */
static bool check_spans(napi_env env, const char *fn, size_t buflen, const int32_t *offs,
                        const int32_t *lens, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    if (offs[i] < 0 || lens[i] < 0 || (uint64_t)offs[i] + (uint64_t)lens[i] > buflen)
      return throw_type(env, "%s: packet %lld [%d, +%d) lies outside the %zu-byte buffer", fn,
                        (long long)i, offs[i], lens[i], buflen);
  }
  return true;
}

static napi_value num(napi_env env, double x) {
  napi_value v;
  napi_create_double(env, x, &v);
  return v;
}

static void set_num(napi_env env, napi_value obj, const char *key, double x) {
  napi_set_named_property(env, obj, key, num(env, x));
}

/* ---- TUN ---- */

static napi_value TunOpen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char name[64], mode[8];
  size_t nlen = 0, mlen = 0;
  bool mq = false, vnet = false;
  if (!get_args(env, info, 4, argv, "tunOpen")) return NULL;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nlen) != napi_ok)
    return throw_type(env, "tunOpen: name must be a string"), NULL;
  if (napi_get_value_string_utf8(env, argv[1], mode, sizeof mode, &mlen) != napi_ok ||
      (strcmp(mode, "tun") != 0 && strcmp(mode, "tap") != 0))
    return throw_type(env, "tunOpen: mode must be 'tun' or 'tap'"), NULL;
  if (napi_get_value_bool(env, argv[2], &mq) != napi_ok ||
      napi_get_value_bool(env, argv[3], &vnet) != napi_ok)
    return throw_type(env, "tunOpen: multiQueue and vnetHdr must be booleans"), NULL;
  if (nlen >= IFNAMSIZ)
    return throw_errno(env, EINVAL, "ioctl", "TUN device name \"%s\" is longer than %d bytes", name,
                       IFNAMSIZ - 1);

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", "open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = (short)((mode[1] == 'a' ? IFF_TAP : IFF_TUN) | IFF_NO_PI |
                          (mq ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0));
  memcpy(ifr.ifr_name, name, nlen);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "ioctl", "ioctl TUNSETIFF %s", nlen ? name : "(any name)");
  }
  napi_value out, v;
  napi_create_object(env, &out);
  set_num(env, out, "fd", fd);
  napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &v);
  napi_set_named_property(env, out, "name", v);
  return out;
}

static napi_value TunSetOffload(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t flags;
  if (!get_args(env, info, 2, argv, "tunSetOffload") || !get_fd(env, argv[0], &fd, "tunSetOffload") ||
      !get_int(env, argv[1], 0, UINT32_MAX, &flags, "tunSetOffload", "flags"))
    return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0)
    return throw_errno(env, errno, "ioctl", "ioctl TUNSETOFFLOAD 0x%llx", (long long)flags);
  return NULL;
}

static napi_value TunSetVnetHdrSize(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t size;
  if (!get_args(env, info, 2, argv, "tunSetVnetHdrSize") ||
      !get_fd(env, argv[0], &fd, "tunSetVnetHdrSize") ||
      !get_int(env, argv[1], 0, INT32_MAX, &size, "tunSetVnetHdrSize", "size"))
    return NULL;
  int sz = (int)size;
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0)
    return throw_errno(env, errno, "ioctl", "ioctl TUNSETVNETHDRSZ %d", sz);
  return NULL;
}

/* ReadBatch(fd, buf, offset, stride, max, lengths: Int32Array) -> count | -errno */
static napi_value ReadBatch(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int fd;
  int64_t off, stride, max;
  uint8_t *buf = NULL, spill;
  size_t buflen = 0, nlens = 0;
  int32_t *lens;
  if (!get_args(env, info, 6, argv, "readBatch") || !get_fd(env, argv[0], &fd, "readBatch") ||
      !get_buf(env, argv[1], &buf, &buflen, "readBatch") ||
      !get_int(env, argv[2], 0, INT64_C(1) << 52, &off, "readBatch", "offset") ||
      !get_int(env, argv[3], 1, INT32_MAX, &stride, "readBatch", "stride") ||
      !get_int(env, argv[4], 0, INT32_MAX, &max, "readBatch", "max") ||
      !get_typed(env, argv[5], napi_int32_array, (void **)&lens, &nlens, "readBatch",
                 "lengths must be an Int32Array"))
    return NULL;
  if ((uint64_t)max > nlens) return throw_type(env, "readBatch: max %lld > lengths.length %zu", (long long)max, nlens), NULL;
  if (!check_slots(env, "readBatch", buflen, off, stride, max)) return NULL;

  /* A second 1-byte iovec tells a packet that exactly fills its room from a truncated one:
   * the TUN driver returns min(packet length, iov total). */
  size_t room0 = (size_t)(stride - off % stride);
  struct iovec iov[2] = {{NULL, 0}, {&spill, 1}};
  int64_t i = 0;
  while (i < max) {
    size_t pos = (size_t)(off + i * stride);
    size_t room = buflen - pos < room0 ? buflen - pos : room0;
    iov[0].iov_base = buf + pos;
    iov[0].iov_len = room;
    ssize_t n = readv(fd, iov, 2);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && i == 0) return num(env, -errno);
      break;
    }
    lens[i++] = (size_t)n > room ? -1 : (int32_t)n;
  }
  return num(env, (double)i);
}

/* WriteBatch(fd, buf, offsets: Int32Array, lengths: Int32Array, count) -> accepted */
static napi_value WriteBatch(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  int64_t count;
  uint8_t *buf = NULL;
  size_t buflen = 0, noffs = 0, nlens = 0;
  int32_t *offs, *lens;
  if (!get_args(env, info, 5, argv, "writeBatch") || !get_fd(env, argv[0], &fd, "writeBatch") ||
      !get_buf(env, argv[1], &buf, &buflen, "writeBatch") ||
      !get_typed(env, argv[2], napi_int32_array, (void **)&offs, &noffs, "writeBatch",
                 "offsets must be an Int32Array") ||
      !get_typed(env, argv[3], napi_int32_array, (void **)&lens, &nlens, "writeBatch",
                 "lengths must be an Int32Array") ||
      !get_int(env, argv[4], 0, INT32_MAX, &count, "writeBatch", "count"))
    return NULL;
  if ((uint64_t)count > noffs || (uint64_t)count > nlens)
    return throw_type(env, "writeBatch: count %lld exceeds offsets/lengths", (long long)count), NULL;
  if (!check_spans(env, "writeBatch", buflen, offs, lens, count)) return NULL;

  int64_t written = 0;
  for (int64_t i = 0; i < count; i++) {
    ssize_t n;
    do n = write(fd, buf + offs[i], (size_t)lens[i]);
    while (n < 0 && errno == EINTR);
    if (n >= 0) {
      written++;
    } else if (errno == EAGAIN || errno == ENOBUFS || errno == EBADF || errno == EBADFD) {
      break;
    } /* else: this packet was refused (EINVAL, EIO, EMSGSIZE...): skip it */
  }
  return num(env, (double)written);
}

/* ---- UDP ---- */

static void set_sockbuf(int fd, int force_opt, int opt, int64_t bytes) {
  int v = (int)bytes;
  if (bytes <= 0) return;
  /* SO_*BUFFORCE needs CAP_NET_ADMIN but may exceed net.core.[rw]mem_max; fall back silently. */
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) < 0)
    (void)setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
}

/* UdpOpen(bindAddr: u32 host order, port, rcvbuf, sndbuf[, offload]) -> { fd, port, gso, gro }
 * No SO_REUSEADDR: on Linux it lets a second UDP socket bind the same port, so two routers
 * would silently share (and split) one port instead of the second failing with EADDRINUSE.
 * UDP has no TIME_WAIT, so a restarted router rebinds without it.
 *
 * DF is set on every datagram (IP_PMTUDISC_DO): a datagram larger than the kernel's path MTU
 * to its destination fails with EMSGSIZE here instead of leaving as IP fragments, and an ICMP
 * "fragmentation needed" from a router on the path lowers that path MTU (pathMtu reads it). The
 * caller keeps every datagram within the path MTU.
 *
 * offload asks for UDP GSO (UDP_SEGMENT probed with the socket-wide size 0, which changes
 * nothing) and UDP GRO (UDP_GRO on: the kernel may hand recvBatch coalesced trains, reported
 * with their segment size). gso/gro say what the kernel accepted. */
static napi_value UdpOpen(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  size_t argc = 5;
  int64_t addr, port, rcvbuf, sndbuf;
  bool offload = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 4) return throw_type(env, "udpOpen: expected 4 or 5 arguments, got %zu", argc), NULL;
  if (!get_int(env, argv[0], 0, UINT32_MAX, &addr, "udpOpen", "bindAddr") ||
      !get_int(env, argv[1], 0, 65535, &port, "udpOpen", "port") ||
      !get_int(env, argv[2], 0, INT32_MAX, &rcvbuf, "udpOpen", "rcvbuf") ||
      !get_int(env, argv[3], 0, INT32_MAX, &sndbuf, "udpOpen", "sndbuf"))
    return NULL;
  if (argc >= 5 && napi_get_value_bool(env, argv[4], &offload) != napi_ok)
    return throw_type(env, "udpOpen: offload must be a boolean"), NULL;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", "socket AF_INET SOCK_DGRAM");
  set_sockbuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
  set_sockbuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf);
  int pmtu = IP_PMTUDISC_DO;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl((uint32_t)addr);
  socklen_t sl = sizeof sa;
  const char *call = "setsockopt";
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0 ||
      (call = "bind", bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) ||
      (call = "getsockname", getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)) {
    int e = errno;
    close(fd);
    uint32_t a = (uint32_t)addr;
    return throw_errno(env, e, call, "%s udp %u.%u.%u.%u:%u", call, a >> 24, (a >> 16) & 255,
                       (a >> 8) & 255, a & 255, (unsigned)port);
  }
  bool gso = false, gro = false;
  if (offload) {
    int zero = 0, one = 1;
    gso = setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
    gro = setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  napi_value out, v;
  napi_create_object(env, &out);
  set_num(env, out, "fd", fd);
  set_num(env, out, "port", ntohs(sa.sin_port));
  napi_get_boolean(env, gso, &v);
  napi_set_named_property(env, out, "gso", v);
  napi_get_boolean(env, gro, &v);
  napi_set_named_property(env, out, "gro", v);
  return out;
}

/* PathMtu(addr) -> mtu | -errno: the kernel's current path MTU towards addr (the route's MTU,
 * lowered by any ICMP "fragmentation needed" it has heard), read with IP_MTU from a connected
 * socket. Connecting a UDP socket sends nothing. Control plane: a few times a second at most. */
static napi_value PathMtu(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t addr;
  if (!get_args(env, info, 1, argv, "pathMtu") ||
      !get_int(env, argv[0], 0, UINT32_MAX, &addr, "pathMtu", "addr"))
    return NULL;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return num(env, -errno);
  int pmtu = IP_PMTUDISC_DO, mtu = 0;
  socklen_t ml = sizeof mtu;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(9); /* discard; never sent to */
  sa.sin_addr.s_addr = htonl((uint32_t)addr);
  int r = 0;
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &ml) < 0)
    r = -errno;
  close(fd);
  return num(env, r < 0 ? r : mtu);
}

static napi_value SocketBuffers(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd, rcv = 0, snd = 0;
  socklen_t l1 = sizeof rcv, l2 = sizeof snd;
  if (!get_args(env, info, 1, argv, "socketBuffers") || !get_fd(env, argv[0], &fd, "socketBuffers"))
    return NULL;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l1) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &l2) < 0)
    return throw_errno(env, errno, "getsockopt", "getsockopt SO_RCVBUF/SO_SNDBUF fd %d", fd);
  napi_value out;
  napi_create_object(env, &out);
  set_num(env, out, "rcvbuf", rcv);
  set_num(env, out, "sndbuf", snd);
  return out;
}

/* recv_chunk receives up to n datagrams into t_msgs (set up by set_msg), retrying on EINTR:
 * the count, 0 when none is queued, or -errno. */
static int recv_chunk(int fd, unsigned n) {
  for (;;) {
    int r = recvmmsg(fd, t_msgs, n, MSG_DONTWAIT, NULL);
    if (r >= 0) return r;
    if (errno != EINTR) return errno == EAGAIN ? 0 : -errno;
  }
}

/* set_msg points t_msgs[j] at one datagram: its address buffer, its bytes and its control space
 * (NULL/0: none), flags and length cleared. Shared by the batched receives and sends. */
static void set_msg(unsigned j, void *name, socklen_t namelen, uint8_t *base, size_t len, void *ctrl,
                    size_t ctrllen) {
  t_iovs[j].iov_base = base;
  t_iovs[j].iov_len = len;
  struct msghdr *h = &t_msgs[j].msg_hdr;
  h->msg_name = name;
  h->msg_namelen = namelen;
  h->msg_iov = &t_iovs[j];
  h->msg_iovlen = 1;
  h->msg_control = ctrl;
  h->msg_controllen = ctrllen;
  h->msg_flags = 0;
  t_msgs[j].msg_len = 0;
}

/* RecvBatch(fd, buf, offset, stride, max, lengths, addrs: Uint32Array, ports: Uint16Array
 *           [, gsoSizes: Uint16Array]) -> count | -errno
 * With gsoSizes (a socket opened with offload and UDP GRO on), gsoSizes[i] is the segment size
 * of a coalesced train (every segment that size but the last, which may be shorter), or 0 for a
 * plain datagram. */
static napi_value RecvBatch(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  size_t argc = 9;
  int fd;
  int64_t off, stride, max;
  uint8_t *buf = NULL;
  size_t buflen = 0, nlens = 0, naddrs = 0, nports = 0, ngso = 0;
  int32_t *lens;
  uint32_t *addrs;
  uint16_t *ports, *gso = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 8) return throw_type(env, "recvBatch: expected 8 or 9 arguments, got %zu", argc), NULL;
  if (!get_fd(env, argv[0], &fd, "recvBatch") ||
      !get_buf(env, argv[1], &buf, &buflen, "recvBatch") ||
      !get_int(env, argv[2], 0, INT64_C(1) << 52, &off, "recvBatch", "offset") ||
      !get_int(env, argv[3], 1, INT32_MAX, &stride, "recvBatch", "stride") ||
      !get_int(env, argv[4], 0, INT32_MAX, &max, "recvBatch", "max") ||
      !get_typed(env, argv[5], napi_int32_array, (void **)&lens, &nlens, "recvBatch",
                 "lengths must be an Int32Array") ||
      !get_typed(env, argv[6], napi_uint32_array, (void **)&addrs, &naddrs, "recvBatch",
                 "addrs must be a Uint32Array") ||
      !get_typed(env, argv[7], napi_uint16_array, (void **)&ports, &nports, "recvBatch",
                 "ports must be a Uint16Array"))
    return NULL;
  if (argc >= 9 && !get_typed(env, argv[8], napi_uint16_array, (void **)&gso, &ngso, "recvBatch",
                              "gsoSizes must be a Uint16Array"))
    return NULL;
  if ((uint64_t)max > nlens || (uint64_t)max > naddrs || (uint64_t)max > nports ||
      (gso != NULL && (uint64_t)max > ngso))
    return throw_type(env, "recvBatch: max %lld exceeds lengths/addrs/ports/gsoSizes", (long long)max), NULL;
  if (!check_slots(env, "recvBatch", buflen, off, stride, max)) return NULL;

  size_t room0 = (size_t)(stride - off % stride);
  int64_t got = 0;
  while (got < max) {
    unsigned n = max - got < MMSG_CHUNK ? (unsigned)(max - got) : MMSG_CHUNK;
    for (unsigned j = 0; j < n; j++) {
      size_t pos = (size_t)(off + (got + j) * stride);
      set_msg(j, &t_names[j], sizeof t_names[j], buf + pos, buflen - pos < room0 ? buflen - pos : room0,
              gso != NULL ? t_ctrl[j].buf : NULL, gso != NULL ? CTRL_BYTES : 0);
    }
    int r = recv_chunk(fd, n);
    if (r < 0) {
      if (got == 0) return num(env, r);
      break;
    }
    for (int j = 0; j < r; j++) {
      struct msghdr *h = &t_msgs[j].msg_hdr;
      int64_t k = got + j;
      lens[k] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)t_msgs[j].msg_len;
      if (h->msg_namelen >= sizeof(struct sockaddr_in) && t_names[j].sin_family == AF_INET) {
        addrs[k] = ntohl(t_names[j].sin_addr.s_addr);
        ports[k] = ntohs(t_names[j].sin_port);
      } else {
        addrs[k] = 0;
        ports[k] = 0;
      }
      if (gso != NULL) {
        gso[k] = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
          if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO &&
              c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int g;
            memcpy(&g, CMSG_DATA(c), sizeof g);
            if (g > 0 && g < 65536 && g < (int)t_msgs[j].msg_len) gso[k] = (uint16_t)g;
          }
        }
      }
    }
    got += r;
    if ((unsigned)r < n) break;
  }
  return num(env, (double)got);
}

/* send_split sends one datagram train (len bytes at p, segments of seg bytes) as separate
 * datagrams: the fallback when the kernel refuses a UDP GSO send. Returns segments sent. */
static int send_split(int fd, const struct sockaddr_in *to, uint8_t *p, size_t len, size_t seg) {
  int sent = 0;
  for (size_t at = 0; at < len; at += seg) {
    size_t n = len - at < seg ? len - at : seg;
    ssize_t r;
    do r = sendto(fd, p + at, n, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof *to);
    while (r < 0 && errno == EINTR);
    if (r < 0) break;
    sent++;
  }
  return sent;
}

/* send_chunk sends the n datagrams set up in t_msgs (datagram i: offs[i]/lens[i] of buf, with
 * gso[i] when gso is not NULL), adding to *sent those accepted. sendmmsg stops at the first
 * failing datagram and, if some were sent, hides its error; the next call then starts with it and
 * reports the error. A datagram whose destination fails is skipped; a train the kernel refuses
 * (EIO/EINVAL/EOPNOTSUPP with its UDP_SEGMENT message) is sent in pieces, counted in stats[0].
 * Returns false when the socket cannot take more now (EAGAIN, ENOBUFS) or is gone: stop there. */
static bool send_chunk(int fd, unsigned n, int64_t *sent, uint8_t *buf, const int32_t *offs,
                       const int32_t *lens, const uint16_t *gso, uint32_t *stats) {
  for (unsigned i = 0; i < n;) {
    int r = sendmmsg(fd, t_msgs + i, n - i, MSG_DONTWAIT);
    if (r > 0) {
      *sent += r;
      i += (unsigned)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r == 0 || errno == EAGAIN || errno == ENOBUFS || errno == EBADF || errno == ENOTSOCK) {
      return false;
    } else {
      if (gso != NULL && t_msgs[i].msg_hdr.msg_control != NULL &&
          (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP)) {
        /* the kernel refused the train (not its destination): send it in pieces */
        if (stats != NULL) stats[0]++;
        if (send_split(fd, (const struct sockaddr_in *)t_msgs[i].msg_hdr.msg_name, buf + offs[i],
                       (size_t)lens[i], gso[i]) > 0)
          (*sent)++;
      }
      i++; /* this destination failed: skip the datagram */
    }
  }
  return true;
}

/* SendBatch(fd, buf, offsets, lengths, addrs: Uint32Array, ports: Uint16Array, count
 *           [, gsoSizes: Uint16Array, stats: Uint32Array]) -> sent
 * With gsoSizes, datagram i whose gsoSizes[i] is non-zero and smaller than its length is a
 * train: the kernel cuts it into datagrams of gsoSizes[i] bytes (the last may be shorter; at
 * most UDP_GSO_SEGMENTS_MAX) with one UDP_SEGMENT control message, one entry of sendmmsg. If
 * the kernel refuses the train (EIO: no checksum offload on the route's device; EINVAL), the
 * train is sent as separate datagrams and stats[0] is incremented, so the caller can stop
 * asking for GSO. A train counts as sent when its first segment was. */
static napi_value SendBatch(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  size_t argc = 9;
  int fd;
  int64_t count;
  uint8_t *buf = NULL;
  size_t buflen = 0, noffs = 0, nlens = 0, naddrs = 0, nports = 0, ngso = 0, nstats = 0;
  int32_t *offs, *lens;
  uint32_t *addrs, *stats = NULL;
  uint16_t *ports, *gso = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 7) return throw_type(env, "sendBatch: expected 7 to 9 arguments, got %zu", argc), NULL;
  if (!get_fd(env, argv[0], &fd, "sendBatch") ||
      !get_buf(env, argv[1], &buf, &buflen, "sendBatch") ||
      !get_typed(env, argv[2], napi_int32_array, (void **)&offs, &noffs, "sendBatch",
                 "offsets must be an Int32Array") ||
      !get_typed(env, argv[3], napi_int32_array, (void **)&lens, &nlens, "sendBatch",
                 "lengths must be an Int32Array") ||
      !get_typed(env, argv[4], napi_uint32_array, (void **)&addrs, &naddrs, "sendBatch",
                 "addrs must be a Uint32Array") ||
      !get_typed(env, argv[5], napi_uint16_array, (void **)&ports, &nports, "sendBatch",
                 "ports must be a Uint16Array") ||
      !get_int(env, argv[6], 0, INT32_MAX, &count, "sendBatch", "count"))
    return NULL;
  if (argc >= 8 && !get_typed(env, argv[7], napi_uint16_array, (void **)&gso, &ngso, "sendBatch",
                              "gsoSizes must be a Uint16Array"))
    return NULL;
  if (argc >= 9 && (!get_typed(env, argv[8], napi_uint32_array, (void **)&stats, &nstats,
                               "sendBatch", "stats must be a Uint32Array") || nstats < 1))
    return throw_type(env, "sendBatch: stats must be a Uint32Array of at least 1"), NULL;
  if ((uint64_t)count > noffs || (uint64_t)count > nlens || (uint64_t)count > naddrs ||
      (uint64_t)count > nports || (gso != NULL && (uint64_t)count > ngso))
    return throw_type(env, "sendBatch: count %lld exceeds offsets/lengths/addrs/ports/gsoSizes", (long long)count), NULL;
  if (!check_spans(env, "sendBatch", buflen, offs, lens, count)) return NULL;

  int64_t sent = 0;
  for (int64_t base = 0; base < count;) {
    unsigned n = count - base < MMSG_CHUNK ? (unsigned)(count - base) : MMSG_CHUNK;
    for (unsigned j = 0; j < n; j++) {
      int64_t k = base + j;
      memset(&t_names[j], 0, sizeof t_names[j]);
      t_names[j].sin_family = AF_INET;
      t_names[j].sin_port = htons(ports[k]);
      t_names[j].sin_addr.s_addr = htonl(addrs[k]);
      set_msg(j, &t_names[j], sizeof t_names[j], buf + offs[k], (size_t)lens[k], NULL, 0);
      struct msghdr *h = &t_msgs[j].msg_hdr;
      if (gso != NULL && gso[k] > 0 && (int32_t)gso[k] < lens[k]) {
        memset(t_ctrl[j].buf, 0, CTRL_BYTES);
        h->msg_control = t_ctrl[j].buf;
        h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t g = gso[k];
        memcpy(CMSG_DATA(c), &g, sizeof g);
      }
    }
    if (!send_chunk(fd, n, &sent, buf, offs + base, lens + base, gso != NULL ? gso + base : NULL, stats))
      return num(env, (double)sent);
    base += n;
  }
  return num(env, (double)sent);
}

/*
 * SegmentTcp4(src, pkt, len, mss, dst, dstOff, stride, max, lens, fullCsum) -> count | -1
 * TSO in software: the IPv4/TCP packet of len bytes at src[pkt] becomes segments of at most mss
 * payload bytes, segment i at dst[dstOff + i*stride] with its length in lens[i]: headers copied,
 * IPv4 total length, ID (+i) and header checksum, TCP sequence number, flags (FIN/PSH only on the
 * last, CWR only on the first). The TCP checksum is complete when fullCsum, else only the
 * pseudo-header sum (the form a virtio-net NEEDS_CSUM packet carries, completed by whoever
 * delivers it). -1: not a well-formed IPv4 TCP packet, or it does not fit max slots of stride
 * bytes (or past dst). src and dst must not overlap.
 */
static uint32_t csum_add(const uint8_t *p, size_t n, uint32_t acc) {
  uint64_t s = acc;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t w;
    memcpy(&w, p + i, 4);
    s += w;
  }
  for (; i + 2 <= n; i += 2) {
    uint16_t w;
    memcpy(&w, p + i, 2);
    s += w;
  }
  if (i < n) {
    uint16_t w = 0;
    memcpy(&w, p + i, 1);
    s += w;
  }
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}
static uint16_t csum_fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)s;
}

/*
 * TcpToPartial(buf, ip, len) -> 1 | 0: when the IPv4/TCP packet of len bytes at buf[ip] (no
 * fragment) has a valid TCP checksum, replaces it with the pseudo-header sum (the virtio-net
 * NEEDS_CSUM form) and returns 1, so segments that arrived with full checksums (VXLAN from a
 * kernel or Weft peer) can be merged into one GSO packet; otherwise leaves it and returns 0.
 */
static napi_value TcpToPartial(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint8_t *buf = NULL;
  size_t buflen = 0;
  int64_t off, len;
  if (!get_args(env, info, 3, argv, "tcpToPartial") || !get_buf(env, argv[0], &buf, &buflen, "tcpToPartial") ||
      !get_int(env, argv[1], 0, INT32_MAX, &off, "tcpToPartial", "ip") ||
      !get_int(env, argv[2], 0, 65535, &len, "tcpToPartial", "len"))
    return NULL;
  if ((size_t)(off + len) > buflen) return throw_type(env, "tcpToPartial: packet outside buf"), NULL;
  uint8_t *ip = buf + off;
  if (len < 40 || (ip[0] >> 4) != 4 || ip[9] != 6 || (((ip[6] << 8) | ip[7]) & 0x3fff) != 0) return num(env, 0);
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  if (ihl < 20 || ihl + 20 > (size_t)len || (size_t)((ip[2] << 8) | ip[3]) != (size_t)len) return num(env, 0);
  size_t tl = (size_t)len - ihl;
  uint32_t ph = csum_add(ip + 12, 8, htons(6)) + htons((uint16_t)tl);
  if (csum_fold(csum_add(ip + ihl, tl, ph)) != 0xffff) return num(env, 0);
  uint16_t partial = csum_fold(ph);
  memcpy(ip + ihl + 16, &partial, 2);
  return num(env, 1);
}

static napi_value SegmentTcp4(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  uint8_t *src = NULL, *dst = NULL;
  size_t srclen = 0, dstlen = 0, nlens = 0;
  int64_t pkt, len, mss, doff, stride, max;
  int32_t *lens;
  bool full = true;
  if (!get_args(env, info, 10, argv, "segmentTcp4") ||
      !get_buf(env, argv[0], &src, &srclen, "segmentTcp4") ||
      !get_int(env, argv[1], 0, INT32_MAX, &pkt, "segmentTcp4", "pkt") ||
      !get_int(env, argv[2], 0, INT32_MAX, &len, "segmentTcp4", "len") ||
      !get_int(env, argv[3], 0, 65535, &mss, "segmentTcp4", "mss") ||
      !get_buf(env, argv[4], &dst, &dstlen, "segmentTcp4") ||
      !get_int(env, argv[5], 0, INT32_MAX, &doff, "segmentTcp4", "dstOff") ||
      !get_int(env, argv[6], 1, INT32_MAX, &stride, "segmentTcp4", "stride") ||
      !get_int(env, argv[7], 0, INT32_MAX, &max, "segmentTcp4", "max") ||
      !get_typed(env, argv[8], napi_int32_array, (void **)&lens, &nlens, "segmentTcp4",
                 "lens must be an Int32Array") ||
      napi_get_value_bool(env, argv[9], &full) != napi_ok)
    return NULL;
  if ((size_t)(pkt + len) > srclen) return throw_type(env, "segmentTcp4: packet outside src"), NULL;
  const uint8_t *ip = src + pkt;
  if (len < 40 || (ip[0] >> 4) != 4 || ip[9] != 6 || mss < 1) return num(env, -1);
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  if (ihl < 20 || ihl + 20 > (size_t)len) return num(env, -1);
  size_t thl = (size_t)(ip[ihl + 12] >> 4) * 4;
  size_t hdr = ihl + thl;
  if (thl < 20 || hdr > (size_t)len) return num(env, -1);
  size_t payload = (size_t)len - hdr;
  int64_t n = payload == 0 ? 1 : (int64_t)((payload + (size_t)mss - 1) / (size_t)mss);
  size_t first = payload < (size_t)mss ? payload : (size_t)mss;
  if (n > max || n > (int64_t)nlens || hdr + first > (size_t)stride ||
      (uint64_t)doff + (uint64_t)(n - 1) * (uint64_t)stride + hdr + first > dstlen)
    return num(env, -1);
  uint16_t id0 = (uint16_t)(ip[4] << 8 | ip[5]);
  uint32_t seq0 = (uint32_t)ip[ihl + 4] << 24 | (uint32_t)ip[ihl + 5] << 16 |
                  (uint32_t)ip[ihl + 6] << 8 | ip[ihl + 7];
  uint8_t flags0 = ip[ihl + 13];
  /* pseudo-header without the length: addresses and protocol (network byte order sums) */
  uint32_t pseudo = csum_add(ip + 12, 8, htons(6));
  for (int64_t i = 0; i < n; i++) {
    uint8_t *o = dst + doff + i * stride;
    size_t chunk = payload - (size_t)i * (size_t)mss;
    if (chunk > (size_t)mss) chunk = (size_t)mss;
    size_t seglen = hdr + chunk;
    memcpy(o, ip, hdr);
    memcpy(o + hdr, ip + hdr + (size_t)i * (size_t)mss, chunk);
    o[2] = (uint8_t)(seglen >> 8);
    o[3] = (uint8_t)seglen;
    uint16_t id = (uint16_t)(id0 + i);
    o[4] = (uint8_t)(id >> 8);
    o[5] = (uint8_t)id;
    o[10] = o[11] = 0;
    uint16_t ic = (uint16_t)~csum_fold(csum_add(o, ihl, 0));
    memcpy(o + 10, &ic, 2);
    uint8_t *t = o + ihl;
    uint32_t seq = htonl(seq0 + (uint32_t)((size_t)i * (size_t)mss));
    memcpy(t + 4, &seq, 4);
    uint8_t f = flags0;
    if (i != n - 1) f &= (uint8_t)~(0x01 | 0x08); /* FIN, PSH */
    if (i != 0) f &= (uint8_t)~0x80;              /* CWR */
    t[13] = f;
    t[16] = t[17] = 0;
    uint32_t ph = pseudo + htons((uint16_t)(thl + chunk));
    uint16_t tc = full ? (uint16_t)~csum_fold(csum_add(t, thl + chunk, ph)) : csum_fold(ph);
    memcpy(t + 16, &tc, 2);
    lens[i] = (int32_t)seglen;
  }
  return num(env, (double)n);
}

/* ---- UDP over IPv6 (the weft-vx heartbeat socket, router/kernel/fastdp-heartbeats.ts) ----
 *
 *   udp6Open(port, device, rcvbuf, sndbuf) -> { fd, port, ifindex }
 *   recvBatch6(fd, buf, offset, stride, max, lengths, addrs, scopes, ports) -> count | -errno
 *   sendBatch6(fd, buf, offsets, lengths, addrs, scopes, ports, count) -> sent
 *
 * Addresses are 16 bytes each, datagram i's at addrs[16*i, 16*i + 16); scopes[i] is its
 * sin6_scope_id (the interface index of a link-local address, 0 otherwise). The scope is numeric
 * both ways, so no call turns an interface name into an index or back (Node's dgram does, with a
 * socket, an ioctl and a close per datagram). Slots and error rules are those of recvBatch /
 * sendBatch, without UDP GSO/GRO.
 */

static __thread struct sockaddr_in6 t_names6[MMSG_CHUNK];

/* Udp6Open(port, device, rcvbuf, sndbuf) -> { fd, port, ifindex }: a non-blocking IPv6-only UDP
 * socket bound to [::]:port (0 = ephemeral), without SO_REUSEADDR (a port in use fails with
 * EADDRINUSE). ifindex is `device`'s index, read once here (ENODEV when there is none): the scope
 * the caller sends its link-local datagrams with and checks arrivals against. The kernel never
 * fragments a datagram of this socket (IPV6_PMTUDISC_DO): one larger than the path MTU it knows
 * fails with EMSGSIZE, so a too-large MTU probe is silence, not fragments that prove nothing. */
static napi_value Udp6Open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t port, rcvbuf, sndbuf;
  char dev[IFNAMSIZ + 1];
  size_t dlen = 0;
  if (!get_args(env, info, 4, argv, "udp6Open") ||
      !get_int(env, argv[0], 0, 65535, &port, "udp6Open", "port"))
    return NULL;
  if (napi_get_value_string_utf8(env, argv[1], dev, sizeof dev, &dlen) != napi_ok)
    return throw_type(env, "udp6Open: device must be a string"), NULL;
  if (!get_int(env, argv[2], 0, INT32_MAX, &rcvbuf, "udp6Open", "rcvbuf") ||
      !get_int(env, argv[3], 0, INT32_MAX, &sndbuf, "udp6Open", "sndbuf"))
    return NULL;
  if (dlen == 0 || dlen >= IFNAMSIZ)
    return throw_errno(env, ENODEV, "if_nametoindex", "udp6Open: device \"%s\"", dev);
  unsigned ifindex = if_nametoindex(dev);
  if (ifindex == 0) return throw_errno(env, errno, "if_nametoindex", "if_nametoindex %s", dev);
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", "socket AF_INET6 SOCK_DGRAM");
  set_sockbuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
  set_sockbuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf);
  int one = 1, pmtu = IPV6_PMTUDISC_DO;
  struct sockaddr_in6 sa;
  memset(&sa, 0, sizeof sa);
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons((uint16_t)port);
  sa.sin6_addr = in6addr_any;
  socklen_t sl = sizeof sa;
  const char *call = "setsockopt";
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0 ||
      setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0 ||
      (call = "bind", bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) ||
      (call = "getsockname", getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, call, "%s udp [::]:%u", call, (unsigned)port);
  }
  napi_value out;
  napi_create_object(env, &out);
  set_num(env, out, "fd", fd);
  set_num(env, out, "port", ntohs(sa.sin6_port));
  set_num(env, out, "ifindex", ifindex);
  return out;
}

/* get_addrs6: the addrs (Uint8Array of 16 bytes per datagram), scopes (Uint32Array) and ports
 * (Uint16Array) of a batch of n datagrams. */
static bool get_addrs6(napi_env env, napi_value *argv, int64_t n, uint8_t **addrs, uint32_t **scopes,
                       uint16_t **ports, const char *fn) {
  size_t naddrs = 0, nscopes = 0, nports = 0;
  if (!get_typed(env, argv[0], napi_uint8_array, (void **)addrs, &naddrs, fn,
                 "addrs must be a Uint8Array (16 bytes per datagram)") ||
      !get_typed(env, argv[1], napi_uint32_array, (void **)scopes, &nscopes, fn,
                 "scopes must be a Uint32Array") ||
      !get_typed(env, argv[2], napi_uint16_array, (void **)ports, &nports, fn,
                 "ports must be a Uint16Array"))
    return false;
  if ((uint64_t)n > naddrs / 16 || (uint64_t)n > nscopes || (uint64_t)n > nports)
    return throw_type(env, "%s: %lld datagrams exceed addrs/scopes/ports", fn, (long long)n);
  return true;
}

/* RecvBatch6(fd, buf, offset, stride, max, lengths, addrs, scopes, ports) -> count | -errno */
static napi_value RecvBatch6(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int fd;
  int64_t off, stride, max;
  uint8_t *buf = NULL, *addrs;
  size_t buflen = 0, nlens = 0;
  int32_t *lens;
  uint32_t *scopes;
  uint16_t *ports;
  if (!get_args(env, info, 9, argv, "recvBatch6") || !get_fd(env, argv[0], &fd, "recvBatch6") ||
      !get_buf(env, argv[1], &buf, &buflen, "recvBatch6") ||
      !get_int(env, argv[2], 0, INT64_C(1) << 52, &off, "recvBatch6", "offset") ||
      !get_int(env, argv[3], 1, INT32_MAX, &stride, "recvBatch6", "stride") ||
      !get_int(env, argv[4], 0, INT32_MAX, &max, "recvBatch6", "max") ||
      !get_typed(env, argv[5], napi_int32_array, (void **)&lens, &nlens, "recvBatch6",
                 "lengths must be an Int32Array") ||
      !get_addrs6(env, argv + 6, max, &addrs, &scopes, &ports, "recvBatch6"))
    return NULL;
  if ((uint64_t)max > nlens)
    return throw_type(env, "recvBatch6: max %lld > lengths.length %zu", (long long)max, nlens), NULL;
  if (!check_slots(env, "recvBatch6", buflen, off, stride, max)) return NULL;

  size_t room0 = (size_t)(stride - off % stride);
  int64_t got = 0;
  while (got < max) {
    unsigned n = max - got < MMSG_CHUNK ? (unsigned)(max - got) : MMSG_CHUNK;
    for (unsigned j = 0; j < n; j++) {
      size_t pos = (size_t)(off + (got + j) * stride);
      set_msg(j, &t_names6[j], sizeof t_names6[j], buf + pos, buflen - pos < room0 ? buflen - pos : room0, NULL, 0);
    }
    int r = recv_chunk(fd, n);
    if (r < 0) {
      if (got == 0) return num(env, r);
      break;
    }
    for (int j = 0; j < r; j++) {
      struct msghdr *h = &t_msgs[j].msg_hdr;
      int64_t k = got + j;
      lens[k] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)t_msgs[j].msg_len;
      if (h->msg_namelen >= sizeof(struct sockaddr_in6) && t_names6[j].sin6_family == AF_INET6) {
        memcpy(addrs + 16 * k, &t_names6[j].sin6_addr, 16);
        scopes[k] = t_names6[j].sin6_scope_id;
        ports[k] = ntohs(t_names6[j].sin6_port);
      } else {
        memset(addrs + 16 * k, 0, 16);
        scopes[k] = 0;
        ports[k] = 0;
      }
    }
    got += r;
    if ((unsigned)r < n) break;
  }
  return num(env, (double)got);
}

/* SendBatch6(fd, buf, offsets, lengths, addrs, scopes, ports, count) -> sent: sendmmsg, with
 * sendBatch's rules (stop at EAGAIN/ENOBUFS/EBADF/ENOTSOCK; skip a datagram whose destination
 * fails: EMSGSIZE, ENETUNREACH, EADDRNOTAVAIL, EINVAL for port 0 or a scope that is no device...). */
static napi_value SendBatch6(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int fd;
  int64_t count;
  uint8_t *buf = NULL, *addrs;
  size_t buflen = 0, noffs = 0, nlens = 0;
  int32_t *offs, *lens;
  uint32_t *scopes;
  uint16_t *ports;
  if (!get_args(env, info, 8, argv, "sendBatch6") || !get_fd(env, argv[0], &fd, "sendBatch6") ||
      !get_buf(env, argv[1], &buf, &buflen, "sendBatch6") ||
      !get_typed(env, argv[2], napi_int32_array, (void **)&offs, &noffs, "sendBatch6",
                 "offsets must be an Int32Array") ||
      !get_typed(env, argv[3], napi_int32_array, (void **)&lens, &nlens, "sendBatch6",
                 "lengths must be an Int32Array") ||
      !get_int(env, argv[7], 0, INT32_MAX, &count, "sendBatch6", "count") ||
      !get_addrs6(env, argv + 4, count, &addrs, &scopes, &ports, "sendBatch6"))
    return NULL;
  if ((uint64_t)count > noffs || (uint64_t)count > nlens)
    return throw_type(env, "sendBatch6: count %lld exceeds offsets/lengths", (long long)count), NULL;
  if (!check_spans(env, "sendBatch6", buflen, offs, lens, count)) return NULL;

  int64_t sent = 0;
  for (int64_t base = 0; base < count;) {
    unsigned n = count - base < MMSG_CHUNK ? (unsigned)(count - base) : MMSG_CHUNK;
    for (unsigned j = 0; j < n; j++) {
      int64_t k = base + j;
      memset(&t_names6[j], 0, sizeof t_names6[j]);
      t_names6[j].sin6_family = AF_INET6;
      t_names6[j].sin6_port = htons(ports[k]);
      memcpy(&t_names6[j].sin6_addr, addrs + 16 * k, 16);
      t_names6[j].sin6_scope_id = scopes[k];
      set_msg(j, &t_names6[j], sizeof t_names6[j], buf + offs[k], (size_t)lens[k], NULL, 0);
    }
    if (!send_chunk(fd, n, &sent, buf, offs + base, lens + base, NULL, NULL)) return num(env, (double)sent);
    base += n;
  }
  return num(env, (double)sent);
}

/* ---- readiness ---- */

enum { W_ACTIVE, W_CLOSING, W_CLOSED };

typedef struct {
  uint32_t magic;
  int state;
  bool js_gone; /* the JS handle was garbage collected: free on close */
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  uv_poll_t poll;
} watch_t;

static void watch_on_close(uv_handle_t *h) {
  watch_t *w = h->data;
  w->state = W_CLOSED;
  t_active_watchers--;
  if (w->js_gone) {
    w->magic = 0;
    free(w);
  }
}

static void watch_stop(napi_env env, watch_t *w) {
  if (w->state != W_ACTIVE) return;
  w->state = W_CLOSING;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_on_close);
  napi_delete_reference(env, w->cb);
  napi_async_destroy(env, w->actx);
  w->cb = NULL;
  w->actx = NULL;
}

static void watch_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  watch_t *w = data;
  w->js_gone = true;
  if (w->state == W_ACTIVE) watch_stop(env, w);
  else if (w->state == W_CLOSED) free(w);
}

static void watch_on_poll(uv_poll_t *h, int status, int events) {
  (void)status; /* on error libuv has stopped the handle; the callback's read sees the error */
  (void)events;
  watch_t *w = h->data;
  if (w->state != W_ACTIVE) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value cb, recv, result;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, w->cb, &cb) == napi_ok && cb != NULL &&
      napi_get_global(env, &recv) == napi_ok && /* MakeCallback wants an object receiver */
      napi_make_callback(env, w->actx, recv, cb, 0, NULL, &result) != napi_ok) {
    /* The callback threw: hand it to process 'uncaughtException' as Node does for its own
     * callbacks, instead of leaving it pending (or aborting). */
    bool pending = false;
    napi_value exc;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &exc) == napi_ok)
      napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* Watch(fd, cb) -> handle: cb() runs on each loop turn while fd is readable (level-triggered). */
static napi_value Watch(napi_env env, napi_callback_info info) {
  napi_value argv[2], name, resource, handle;
  napi_valuetype t;
  uv_loop_t *loop;
  int fd;
  if (!get_args(env, info, 2, argv, "watch") || !get_fd(env, argv[0], &fd, "watch")) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    return throw_type(env, "watch: callback must be a function"), NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, EINVAL, "watch", "no event loop");
  watch_t *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, ENOMEM, "watch", "watch fd %d", fd);
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    free(w);
    return throw_errno(env, -r, "uv_poll_init", "watch fd %d", fd);
  }
  w->magic = WATCH_MAGIC;
  w->env = env;
  w->poll.data = w;
  w->state = W_ACTIVE;
  t_active_watchers++;
  napi_create_string_utf8(env, "weft:watch", NAPI_AUTO_LENGTH, &name);
  napi_create_object(env, &resource);
  if (napi_create_reference(env, argv[1], 1, &w->cb) != napi_ok ||
      napi_async_init(env, resource, name, &w->actx) != napi_ok ||
      (r = uv_poll_start(&w->poll, UV_READABLE, watch_on_poll)) < 0 ||
      napi_create_external(env, w, watch_finalize, NULL, &handle) != napi_ok) {
    w->js_gone = true;
    watch_stop(env, w); /* frees w once libuv has closed the handle */
    return r < 0 ? throw_errno(env, -r, "uv_poll_start", "watch fd %d", fd) : NULL;
  }
  return handle;
}

static napi_value Unwatch(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_valuetype t;
  void *p = NULL;
  if (!get_args(env, info, 1, argv, "unwatch")) return NULL;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL ||
      ((watch_t *)p)->magic != WATCH_MAGIC)
    return throw_type(env, "unwatch: not a watch handle"), NULL;
  watch_stop(env, p);
  return NULL;
}

static napi_value ActiveWatchers(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, t_active_watchers);
}

/*
 * copyBytes(src, srcOff, dst, dstOff, len): memmove between two Buffers (or within one). Node's
 * Buffer#copy and TypedArray#set with a subarray create a view object per call; the per-packet
 * path (TSO segmentation) copies without allocating through this. Bounds are checked.
 */
static napi_value CopyBytes(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint8_t *src = NULL, *dst = NULL;
  size_t srcLen = 0, dstLen = 0;
  int64_t so = 0, dOff = 0, len = 0;
  if (!get_args(env, info, 5, argv, "copyBytes") || !get_buf(env, argv[0], &src, &srcLen, "copyBytes") ||
      !get_int(env, argv[1], 0, INT32_MAX, &so, "copyBytes", "srcOff") ||
      !get_buf(env, argv[2], &dst, &dstLen, "copyBytes") ||
      !get_int(env, argv[3], 0, INT32_MAX, &dOff, "copyBytes", "dstOff") ||
      !get_int(env, argv[4], 0, INT32_MAX, &len, "copyBytes", "len"))
    return NULL;
  if ((size_t)(so + len) > srcLen || (size_t)(dOff + len) > dstLen) {
    throw_type(env, "copyBytes: range out of bounds");
    return NULL;
  }
  memmove(dst + dOff, src + so, (size_t)len);
  return NULL;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, "close") || !get_fd(env, argv[0], &fd, "close")) return NULL;
  /* Linux releases the fd even when close() fails (EINTR included): never retry. */
  return num(env, close(fd) < 0 ? -errno : 0);
}

/* ---- netlink (issue #14): the kernel fast path is programmed over NETLINK_ROUTE ----
 *
 * The messages are built and parsed in TypeScript (router/kernel/netlink.ts); C only moves bytes.
 * The socket is blocking with a 1 s receive timeout: the kernel answers a request at once, and a
 * lost answer must not hang the control plane. Never used on the hot path. */
static napi_value NlOpen(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return throw_errno(env, errno, "socket", "socket AF_NETLINK NETLINK_ROUTE");
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
  int rcv = 1 << 20, one = 1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "bind", "bind netlink socket");
  }
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
#ifdef NETLINK_EXT_ACK
  (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
#else
  (void)one;
#endif
  return num(env, fd);
}

static napi_value NlSend(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint8_t *data = NULL;
  size_t len = 0;
  int64_t n;
  if (!get_args(env, info, 3, argv, "nlSend") || !get_fd(env, argv[0], &fd, "nlSend") ||
      !get_buf(env, argv[1], &data, &len, "nlSend") || !get_int(env, argv[2], 0, (int64_t)len, &n, "nlSend", "len"))
    return NULL;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  ssize_t r;
  do r = sendto(fd, data, (size_t)n, 0, (struct sockaddr *)&sa, sizeof sa);
  while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : (double)r);
}

static napi_value NlRecv(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint8_t *data = NULL;
  size_t len = 0;
  if (!get_args(env, info, 2, argv, "nlRecv") || !get_fd(env, argv[0], &fd, "nlRecv") ||
      !get_buf(env, argv[1], &data, &len, "nlRecv"))
    return NULL;
  ssize_t r;
  do r = recv(fd, data, len, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno == EWOULDBLOCK) return num(env, -EAGAIN);
  return num(env, r < 0 ? -errno : (double)r);
}

/* ---- AEAD (issue #13): batched AES-256-GCM / ChaCha20-Poly1305 over Node's own OpenSSL ----
 *
 *   aeadKey(cipher, key[, iv]) -> key handle       one EVP_CIPHER_CTX per direction of use, reused
 *   aeadFree(key)                                 wipe and free now (else on garbage collection)
 *   aeadSeal(key, buf, off, len, aadLen, counter) -> len + 16
 *   aeadOpen(key, buf, off, len, aadLen, counter) -> len - 16 | -1
 *   aeadSealBatch(key, buf, offsets, lengths, counters, count, aadLen, ctrAt, maskAt[, first]) -> count
 *   aeadOpenBatch(key, buf, offsets, lengths, counters, count, aadLen, ctrAt, maskAt, results[, first]) -> ok
 *
 * A packet is | AAD (aadLen) | text | tag (16) | at buf[off], sealed and opened in place: `len`
 * is the packet as it is now (seal: AAD + plaintext, the tag is written after it, so 16 more
 * bytes must fit in buf; open: AAD + ciphertext + tag). Nonce (12 bytes, as RFC 8439 §2.8 and
 * SP 800-38D's 96-bit IV) = the key's static iv (12 bytes, zero when omitted) XOR the counter as
 * 8 bytes big-endian in its last 8 bytes (TLS 1.3 §5.3): with a zero iv that is 4 zero bytes ||
 * counter; the first 4 bytes of the iv act as a per-key salt. Counters are integers in [0, 2^53)
 * so JS passes them as plain numbers; the caller must never seal two packets with one
 * (key, counter).
 *
 * Batches: the packets are entries first..first+count-1 (first defaults to 0) of the parallel
 * arrays offsets, lengths, counters (and results), so one datagram list can be sealed in runs,
 * one run per key, without views. ctrAt >= 0 puts the counter on the wire, 8 bytes big-endian
 * at packet + ctrAt (inside the AAD, so it is authenticated): seal writes counters[i] there,
 * open reads it into counters[i] (-1 when it is >= 2^53: that packet fails). ctrAt = -1 takes
 * counters[i] as given. maskAt >= 0 authenticates the AAD byte at packet + maskAt as if it were
 * zero (a field relays may change, such as the sleeve ttl); -1 authenticates the AAD as it is.
 *
 * Cost: per packet one EVP_CipherInit_ex (new IV, key schedule kept) and one tag get/set; in
 * OpenSSL 3.0 those go through OSSL_PARAM lookups (about a quarter of the time of a 64-byte
 * packet, negligible at 1400). The EVP contexts are not thread-safe: a key belongs to the
 * thread that made it.
 *
 * Errors: bad types throw TypeError; offsets, lengths, counters or positions outside their
 * bounds throw RangeError before any packet is touched (a batch is sealed whole or not at all).
 * An open that fails (bad tag, packet shorter than aadLen + 16) is a result, never a throw:
 * results[i] = 1 opened, 0 failed. A failed packet is left unchanged (its ciphertext is put
 * back), so another key may be tried on it. Nothing here allocates per packet (the IV and AAD pieces live on the stack).
 */
#define AEAD_MAGIC 0x61656164u /* "aead" */
#define AEAD_KEY_LEN 32
#define AEAD_TAG_LEN 16
#define AEAD_IV_LEN 12
#define AEAD_COUNTER_LIMIT 9007199254740992.0 /* 2^53: every counter is an exact double */

enum { AEAD_AES_256_GCM = 0, AEAD_CHACHA20_POLY1305 = 1 };

typedef struct {
  uint32_t magic;
  int cipher;
  uint8_t iv[AEAD_IV_LEN]; /* static per-key IV; the counter is XORed into its last 8 bytes */
  EVP_CIPHER_CTX *enc; /* keyed once at creation; each packet only sets the IV */
  EVP_CIPHER_CTX *dec;
} aead_t;

static bool throw_range(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return false;
}

static void aead_release(aead_t *k) {
  /* EVP_CIPHER_CTX_free cleanses the key schedule it holds. */
  OPENSSL_cleanse(k->iv, sizeof k->iv);
  EVP_CIPHER_CTX_free(k->enc);
  EVP_CIPHER_CTX_free(k->dec);
  k->enc = k->dec = NULL;
}

static void aead_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  aead_t *k = data;
  aead_release(k);
  k->magic = 0;
  free(k);
}

static bool get_aead(napi_env env, napi_value v, aead_t **out, const char *fn) {
  napi_valuetype t;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, v, &p) != napi_ok || p == NULL ||
      ((aead_t *)p)->magic != AEAD_MAGIC)
    return throw_type(env, "%s: key must be a handle from aeadKey", fn);
  if (((aead_t *)p)->enc == NULL) return throw_type(env, "%s: key was freed", fn);
  *out = p;
  return true;
}

static inline void aead_iv(uint8_t iv[AEAD_IV_LEN], const uint8_t base[AEAD_IV_LEN], uint64_t ctr) {
  memcpy(iv, base, 4);
  for (int i = 0; i < 8; i++) iv[4 + i] = base[4 + i] ^ (uint8_t)(ctr >> (56 - 8 * i));
}

static inline void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* aead_aad feeds the AAD, the byte at maskAt (if any) as zero, in at most three updates. */
static inline bool aead_aad(EVP_CIPHER_CTX *c, const uint8_t *aad, size_t n, int64_t maskAt) {
  int outl;
  static const uint8_t zero = 0;
  if (maskAt < 0 || (size_t)maskAt >= n) return n == 0 || EVP_CipherUpdate(c, NULL, &outl, aad, (int)n) == 1;
  size_t m = (size_t)maskAt;
  return (m == 0 || EVP_CipherUpdate(c, NULL, &outl, aad, (int)m) == 1) &&
         EVP_CipherUpdate(c, NULL, &outl, &zero, 1) == 1 &&
         (m + 1 == n || EVP_CipherUpdate(c, NULL, &outl, aad + m + 1, (int)(n - m - 1)) == 1);
}

/* aead_seal1: p[0, aadLen) AAD, p[aadLen, len) plaintext → ciphertext, tag at p[len]. */
static bool aead_seal1(aead_t *k, uint8_t *p, size_t len, size_t aadLen, uint64_t ctr, int64_t maskAt) {
  uint8_t iv[AEAD_IV_LEN];
  int outl;
  aead_iv(iv, k->iv, ctr);
  EVP_CIPHER_CTX *c = k->enc;
  return EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, 1) == 1 && aead_aad(c, p, aadLen, maskAt) &&
         (len == aadLen || EVP_CipherUpdate(c, p + aadLen, &outl, p + aadLen, (int)(len - aadLen)) == 1) &&
         EVP_CipherFinal_ex(c, p + len, &outl) == 1 &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, p + len) == 1;
}

/* aead_open1: p[0, aadLen) AAD, p[aadLen, len - 16) ciphertext → plaintext, tag at p[len - 16]. */
static bool aead_open1(aead_t *k, uint8_t *p, size_t len, size_t aadLen, uint64_t ctr, int64_t maskAt) {
  uint8_t iv[AEAD_IV_LEN], tag[AEAD_TAG_LEN], fin[AEAD_TAG_LEN];
  int outl;
  if (len < aadLen + AEAD_TAG_LEN) return false;
  size_t textEnd = len - AEAD_TAG_LEN;
  memcpy(tag, p + textEnd, AEAD_TAG_LEN); /* SET_TAG wants a mutable pointer */
  aead_iv(iv, k->iv, ctr);
  EVP_CIPHER_CTX *c = k->dec;
  if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, 0) == 1 && aead_aad(c, p, aadLen, maskAt) &&
      (textEnd == aadLen || EVP_CipherUpdate(c, p + aadLen, &outl, p + aadLen, (int)(textEnd - aadLen)) == 1) &&
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, tag) == 1 && EVP_CipherFinal_ex(c, fin, &outl) == 1)
    return true;
  /* Not authentic: put the ciphertext back (both ciphers are a keystream XOR, so encrypting
   * with the same key and nonce undoes the decryption), so a failed packet is left as it came
   * and the caller may try another key on it. Costs a second pass only on failures. */
  if (textEnd > aadLen && EVP_CipherInit_ex(k->enc, NULL, NULL, NULL, iv, 1) == 1)
    (void)EVP_CipherUpdate(k->enc, p + aadLen, &outl, p + aadLen, (int)(textEnd - aadLen));
  return false;
}

/* AeadKey(cipher: 'aes-256-gcm' | 'chacha20-poly1305', key: 32-byte Uint8Array[, iv: 12-byte Uint8Array]) */
static napi_value AeadKey(napi_env env, napi_callback_info info) {
  napi_value argv[3], handle;
  char name[24];
  size_t nlen = 0, klen = 0, ivlen = 0, argc = 3;
  void *kp = NULL, *ivp = NULL;
  bool is = false;
  napi_typedarray_type tt;
  napi_valuetype vt = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) return throw_type(env, "aeadKey: expected 2 or 3 arguments, got %zu", argc), NULL;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nlen) != napi_ok)
    return throw_type(env, "aeadKey: cipher must be a string"), NULL;
  int cipher = strcmp(name, "aes-256-gcm") == 0 ? AEAD_AES_256_GCM
               : strcmp(name, "chacha20-poly1305") == 0 ? AEAD_CHACHA20_POLY1305 : -1;
  if (cipher < 0) return throw_type(env, "aeadKey: cipher must be 'aes-256-gcm' or 'chacha20-poly1305', got '%s'", name), NULL;
  if (napi_is_typedarray(env, argv[1], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[1], &tt, &klen, &kp, NULL, NULL) != napi_ok || tt != napi_uint8_array)
    return throw_type(env, "aeadKey: key must be a Buffer or Uint8Array"), NULL;
  if (klen != AEAD_KEY_LEN) return throw_range(env, "aeadKey: key must be %d bytes, got %zu", AEAD_KEY_LEN, klen), NULL;
  if (argc >= 3 && napi_typeof(env, argv[2], &vt) == napi_ok && vt != napi_undefined) {
    if (napi_is_typedarray(env, argv[2], &is) != napi_ok || !is ||
        napi_get_typedarray_info(env, argv[2], &tt, &ivlen, &ivp, NULL, NULL) != napi_ok || tt != napi_uint8_array)
      return throw_type(env, "aeadKey: iv must be a Buffer or Uint8Array"), NULL;
    if (ivlen != AEAD_IV_LEN) return throw_range(env, "aeadKey: iv must be %d bytes, got %zu", AEAD_IV_LEN, ivlen), NULL;
  }
  aead_t *k = calloc(1, sizeof *k);
  if (k == NULL) return throw_errno(env, ENOMEM, "aeadKey", "aeadKey");
  const EVP_CIPHER *ev = cipher == AEAD_AES_256_GCM ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
  k->magic = AEAD_MAGIC;
  k->cipher = cipher;
  if (ivp != NULL) memcpy(k->iv, ivp, AEAD_IV_LEN);
  k->enc = EVP_CIPHER_CTX_new();
  k->dec = EVP_CIPHER_CTX_new();
  uint8_t iv0[AEAD_IV_LEN] = {0};
  if (k->enc == NULL || k->dec == NULL || EVP_CipherInit_ex(k->enc, ev, NULL, kp, iv0, 1) != 1 ||
      EVP_CipherInit_ex(k->dec, ev, NULL, kp, iv0, 0) != 1) {
    aead_release(k);
    free(k);
    return throw_errno(env, EINVAL, "EVP_CipherInit_ex", "aeadKey %s", name);
  }
  if (napi_create_external(env, k, aead_finalize, NULL, &handle) != napi_ok) {
    aead_release(k);
    free(k);
    return NULL;
  }
  return handle;
}

static napi_value AeadFree(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_valuetype t;
  void *p = NULL;
  if (!get_args(env, info, 1, argv, "aeadFree")) return NULL;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL || ((aead_t *)p)->magic != AEAD_MAGIC)
    return throw_type(env, "aeadFree: key must be a handle from aeadKey"), NULL;
  aead_release(p); /* idempotent; the struct itself goes with the handle */
  return NULL;
}

static bool get_counter(napi_env env, napi_value v, uint64_t *out, const char *fn) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d < AEAD_COUNTER_LIMIT) || d != (double)(int64_t)d)
    return throw_range(env, "%s: counter must be an integer in [0, 2^53)", fn);
  *out = (uint64_t)d;
  return true;
}

/* aead_one: the shared body of AeadSeal / AeadOpen. */
static napi_value aead_one(napi_env env, napi_callback_info info, bool seal) {
  const char *fn = seal ? "aeadSeal" : "aeadOpen";
  napi_value argv[6];
  aead_t *k;
  uint8_t *buf = NULL;
  size_t buflen = 0;
  int64_t off, len, aadLen;
  uint64_t ctr = 0;
  if (!get_args(env, info, 6, argv, fn) || !get_aead(env, argv[0], &k, fn) ||
      !get_buf(env, argv[1], &buf, &buflen, fn) || !get_int(env, argv[2], 0, INT32_MAX, &off, fn, "off") ||
      !get_int(env, argv[3], 0, INT32_MAX, &len, fn, "len") ||
      !get_int(env, argv[4], 0, INT32_MAX, &aadLen, fn, "aadLen") || !get_counter(env, argv[5], &ctr, fn))
    return NULL;
  uint64_t end = (uint64_t)off + (uint64_t)len + (seal ? AEAD_TAG_LEN : 0);
  if (end > buflen)
    return throw_range(env, "%s: packet [%lld, +%lld)%s lies outside the %zu-byte buffer", fn, (long long)off,
                       (long long)len, seal ? " and its tag" : "", buflen), NULL;
  if (aadLen > len) return throw_range(env, "%s: aadLen %lld > len %lld", fn, (long long)aadLen, (long long)len), NULL;
  if (seal) {
    if (!aead_seal1(k, buf + off, (size_t)len, (size_t)aadLen, ctr, -1))
      return throw_errno(env, EINVAL, "EVP_CipherUpdate", "aeadSeal"), NULL;
    return num(env, (double)(len + AEAD_TAG_LEN));
  }
  return num(env, aead_open1(k, buf + off, (size_t)len, (size_t)aadLen, ctr, -1) ? (double)(len - AEAD_TAG_LEN) : -1);
}

static napi_value AeadSeal(napi_env env, napi_callback_info info) { return aead_one(env, info, true); }
static napi_value AeadOpen(napi_env env, napi_callback_info info) { return aead_one(env, info, false); }

/* aead_batch: the shared body of AeadSealBatch / AeadOpenBatch (see the section comment). */
static napi_value aead_batch(napi_env env, napi_callback_info info, bool seal) {
  const char *fn = seal ? "aeadSealBatch" : "aeadOpenBatch";
  napi_value argv[11];
  aead_t *k;
  uint8_t *buf = NULL, *results = NULL;
  size_t buflen = 0, noffs = 0, nlens = 0, nctrs = 0, nres = 0;
  int32_t *offs, *lens;
  double *ctrs;
  int64_t count, aadLen, ctrAt, maskAt, first = 0;
  size_t want = seal ? 9 : 10, argc = 11;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < want)
    return throw_type(env, "%s: expected %zu or %zu arguments, got %zu", fn, want, want + 1, argc), NULL;
  if (!get_aead(env, argv[0], &k, fn) ||
      !get_buf(env, argv[1], &buf, &buflen, fn) ||
      !get_typed(env, argv[2], napi_int32_array, (void **)&offs, &noffs, fn, "offsets must be an Int32Array") ||
      !get_typed(env, argv[3], napi_int32_array, (void **)&lens, &nlens, fn, "lengths must be an Int32Array") ||
      !get_typed(env, argv[4], napi_float64_array, (void **)&ctrs, &nctrs, fn, "counters must be a Float64Array") ||
      !get_int(env, argv[5], 0, INT32_MAX, &count, fn, "count") ||
      !get_int(env, argv[6], 0, 65535, &aadLen, fn, "aadLen") ||
      !get_int(env, argv[7], -1, 65535, &ctrAt, fn, "ctrAt") || !get_int(env, argv[8], -1, 65535, &maskAt, fn, "maskAt"))
    return NULL;
  if (!seal && !get_typed(env, argv[9], napi_uint8_array, (void **)&results, &nres, fn, "results must be a Uint8Array"))
    return NULL;
  if (argc > want && !get_int(env, argv[want], 0, INT32_MAX, &first, fn, "first")) return NULL;
  /* first: the batch is entries first..first+count-1 of every array (parallel arrays, no views). */
  if ((uint64_t)first > noffs || (uint64_t)first > nlens || (uint64_t)first > nctrs || (!seal && (uint64_t)first > nres))
    return throw_range(env, "%s: first %lld exceeds offsets/lengths/counters%s", fn, (long long)first,
                       seal ? "" : "/results"), NULL;
  offs += first;
  lens += first;
  ctrs += first;
  noffs -= (size_t)first;
  nlens -= (size_t)first;
  nctrs -= (size_t)first;
  if (!seal) {
    results += first;
    nres -= (size_t)first;
  }
  if ((uint64_t)count > noffs || (uint64_t)count > nlens || (uint64_t)count > nctrs || (!seal && (uint64_t)count > nres))
    return throw_range(env, "%s: first + count %lld exceeds offsets/lengths/counters%s", fn, (long long)(first + count),
                       seal ? "" : "/results"), NULL;
  if (ctrAt >= 0 && ctrAt + 8 > aadLen)
    return throw_range(env, "%s: counter at %lld does not fit the %lld-byte AAD", fn, (long long)ctrAt, (long long)aadLen), NULL;
  if (maskAt >= aadLen)
    return throw_range(env, "%s: maskAt %lld is outside the %lld-byte AAD", fn, (long long)maskAt, (long long)aadLen), NULL;
  /* Validate everything before touching a packet. */
  for (int64_t i = 0; i < count; i++) {
    uint64_t extra = seal ? AEAD_TAG_LEN : 0;
    if (offs[i] < 0 || lens[i] < 0 || (uint64_t)offs[i] + (uint64_t)lens[i] + extra > buflen)
      return throw_range(env, "%s: packet %lld [%d, +%d)%s lies outside the %zu-byte buffer", fn, (long long)(first + i),
                         offs[i], lens[i], seal ? " and its tag" : "", buflen), NULL;
    if (seal && lens[i] < aadLen)
      return throw_range(env, "%s: packet %lld is %d bytes, shorter than its %lld-byte AAD", fn, (long long)(first + i),
                         lens[i], (long long)aadLen), NULL;
    if ((seal || ctrAt < 0) && !(ctrs[i] >= 0 && ctrs[i] < AEAD_COUNTER_LIMIT && ctrs[i] == (double)(int64_t)ctrs[i]))
      return throw_range(env, "%s: counters[%lld] must be an integer in [0, 2^53)", fn, (long long)(first + i)), NULL;
  }
  int64_t ok = 0;
  for (int64_t i = 0; i < count; i++) {
    uint8_t *p = buf + offs[i];
    size_t len = (size_t)lens[i];
    if (seal) {
      uint64_t ctr = (uint64_t)ctrs[i];
      if (ctrAt >= 0) put_be64(p + ctrAt, ctr);
      if (!aead_seal1(k, p, len, (size_t)aadLen, ctr, maskAt))
        return throw_errno(env, EINVAL, "EVP_CipherUpdate", "%s packet %lld", fn, (long long)i), NULL;
      ok++;
      continue;
    }
    uint64_t ctr = 0;
    if (ctrAt >= 0) {
      if (len < (size_t)aadLen) { /* too short to hold the counter: a wire error, not a throw */
        ctrs[i] = -1;
        results[i] = 0;
        continue;
      }
      ctr = get_be64(p + ctrAt);
      if ((double)ctr >= AEAD_COUNTER_LIMIT) {
        ctrs[i] = -1;
        results[i] = 0;
        continue;
      }
      ctrs[i] = (double)ctr;
    } else {
      ctr = (uint64_t)ctrs[i];
    }
    bool r = aead_open1(k, p, len, (size_t)aadLen, ctr, maskAt);
    results[i] = r ? 1 : 0;
    ok += r;
  }
  return num(env, (double)ok);
}

static napi_value AeadSealBatch(napi_env env, napi_callback_info info) { return aead_batch(env, info, true); }
static napi_value AeadOpenBatch(napi_env env, napi_callback_info info) { return aead_batch(env, info, false); }

/* ---- module ---- */

NAPI_MODULE_INIT() {
  static const struct { const char *name; napi_callback fn; } fns[] = {
      {"tunOpen", TunOpen},       {"tunSetOffload", TunSetOffload},
      {"tunSetVnetHdrSize", TunSetVnetHdrSize},
      {"udpOpen", UdpOpen},       {"socketBuffers", SocketBuffers},
      {"pathMtu", PathMtu},       {"segmentTcp4", SegmentTcp4},
      {"tcpToPartial", TcpToPartial},
      {"watch", Watch},           {"unwatch", Unwatch},
      {"activeWatchers", ActiveWatchers},
      {"readBatch", ReadBatch},   {"writeBatch", WriteBatch},
      {"recvBatch", RecvBatch},   {"sendBatch", SendBatch},
      {"udp6Open", Udp6Open},
      {"recvBatch6", RecvBatch6}, {"sendBatch6", SendBatch6},
      {"close", Close},
      {"nlOpen", NlOpen},         {"nlSend", NlSend},         {"nlRecv", NlRecv},
      {"copyBytes", CopyBytes},
      {"aeadKey", AeadKey},       {"aeadFree", AeadFree},
      {"aeadSeal", AeadSeal},     {"aeadOpen", AeadOpen},
      {"aeadSealBatch", AeadSealBatch}, {"aeadOpenBatch", AeadOpenBatch},
  };
  static const struct { const char *name; double value; } consts[] = {
      {"IFF_TUN", IFF_TUN},
      {"IFF_TAP", IFF_TAP},
      {"IFF_NO_PI", IFF_NO_PI},
      {"IFF_MULTI_QUEUE", IFF_MULTI_QUEUE},
      {"IFF_VNET_HDR", IFF_VNET_HDR},
      {"TUN_F_CSUM", TUN_F_CSUM},
      {"TUN_F_TSO4", TUN_F_TSO4},
      {"TUN_F_TSO6", TUN_F_TSO6},
      {"TUN_F_TSO_ECN", TUN_F_TSO_ECN},
      {"TUN_F_UFO", TUN_F_UFO},
#ifdef TUN_F_USO4
      {"TUN_F_USO4", TUN_F_USO4},
      {"TUN_F_USO6", TUN_F_USO6},
#endif
      {"VIRTIO_NET_HDR_LEN", sizeof(struct virtio_net_hdr)},
      {"VIRTIO_NET_HDR_MRG_RXBUF_LEN", sizeof(struct virtio_net_hdr_mrg_rxbuf)},
      {"MMSG_CHUNK", MMSG_CHUNK},
      {"UDP_GSO_SEGMENTS_MAX", UDP_GSO_SEGMENTS_MAX},
      {"AEAD_TAG_LEN", AEAD_TAG_LEN},
      {"AEAD_KEY_LEN", AEAD_KEY_LEN},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, f) != napi_ok)
      return NULL;
  }
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
    set_num(env, exports, consts[i].name, consts[i].value);
  return exports;
}
