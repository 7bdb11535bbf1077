/*
 * keygate vsock-shim: AF_VSOCK stream sockets and the Nitro Security Module
 * device for Node.js, through N-API.
 *
 * Node's net.Socket refuses AF_VSOCK descriptors, so this addon exposes the
 * raw, non-blocking socket calls and a uv_poll_t readiness watcher; the JS
 * side (vsock.ts) builds a Duplex stream with backpressure on top. The NSM
 * ioctl can block for a long time, so it runs on the libuv thread pool.
 *
 * Addresses arrive from JS as the 16-byte struct sockaddr_vm already encoded
 * (see encodeSockaddrVm in vsock.ts), which keeps the encoding unit-testable.
 * On platforms without AF_VSOCK or /dev/nsm every call fails with ENOTSUP.
 *
 * One convention for every call: it returns its result, or throws (the NSM
 * request: rejects) an Error with .code (the errno name, e.g. "EBADF"),
 * .errno (the positive errno value, as in os.constants.errno) and .syscall.
 * Bad arguments throw a TypeError with code "EINVAL". "Would block" is not an
 * error: read, write and accept return null, connect returns false while the
 * connection is in progress. So the JS side needs no errno numbers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#ifdef __linux__
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#define KG_HAVE_VSOCK 1
#else
#define KG_HAVE_VSOCK 0
#endif

#define NSM_RESPONSE_MAX 0x3000
#define NSM_REQUEST_MAX 0x1000
/* _IOWR(0x0A, 0, struct nsm_raw) with sizeof(struct nsm_raw) == 32 */
#define NSM_IOCTL_REQUEST 0xC0200A00UL

#define CHECK(call)                                                        \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error(env, "EADDON", "N-API call failed: " #call);        \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

/* A JS Error with .code = "E..." (from errno), .errno and .syscall: the one error shape of this addon. */
static napi_value errno_error(napi_env env, int err, const char *syscall) {
  char message[160];
  const char *name = uv_err_name(-err);
  snprintf(message, sizeof message, "%s failed: %s (%s)", syscall, strerror(err), name);
  napi_value msg, code, error, errnum, call;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &call);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_set_named_property(env, error, "code", code);
  napi_set_named_property(env, error, "syscall", call);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  napi_throw(env, errno_error(env, err, syscall));
  return NULL;
}

static napi_value make_null(napi_env env) {
  napi_value out;
  napi_get_null(env, &out);
  return out;
}

static napi_value make_bool(napi_env env, bool v) {
  napi_value out;
  napi_get_boolean(env, v, &out);
  return out;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

/* Reads argument i as a buffer of exactly `want` bytes (want == 0: any size). */
static int get_bytes(napi_env env, napi_value v, void **data, size_t *len, size_t want) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) return 0;
  if (napi_get_buffer_info(env, v, data, len) != napi_ok) return 0;
  return want == 0 || *len == want;
}

/* Reads a single fd argument; throws a TypeError naming `signature` when it is wrong. */
static int fd_arg(napi_env env, napi_callback_info info, int32_t *fd, const char *signature) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !get_int(env, argv[0], fd)) {
    napi_throw_type_error(env, "EINVAL", signature);
    return 0;
  }
  return 1;
}

static napi_value vs_available(napi_env env, napi_callback_info info) {
  (void)info;
  return make_bool(env, KG_HAVE_VSOCK);
}

/* socket() -> fd; non-blocking and close-on-exec from the start. */
static napi_value vs_socket(napi_env env, napi_callback_info info) {
  (void)info;
#if KG_HAVE_VSOCK
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket(AF_VSOCK)");
  return make_int(env, fd);
#else
  return throw_errno(env, ENOTSUP, "socket(AF_VSOCK)");
#endif
}

/* connect(fd, addr16) -> true (connected), false (in progress: the normal answer; see finishConnect). */
static napi_value vs_connect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  void *addr;
  size_t len;
  if (argc < 2 || !get_int(env, argv[0], &fd) || !get_bytes(env, argv[1], &addr, &len, 16)) {
    napi_throw_type_error(env, "EINVAL", "connect(fd, sockaddr_vm[16])");
    return NULL;
  }
#if KG_HAVE_VSOCK
  if (connect(fd, (const struct sockaddr *)addr, (socklen_t)len) == 0) return make_bool(env, true);
  if (errno == EINPROGRESS) return make_bool(env, false);
  return throw_errno(env, errno, "connect");
#else
  return throw_errno(env, ENOTSUP, "connect");
#endif
}

static napi_value vs_bind_listen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, backlog;
  void *addr;
  size_t len;
  if (argc < 3 || !get_int(env, argv[0], &fd) || !get_bytes(env, argv[1], &addr, &len, 16) || !get_int(env, argv[2], &backlog)) {
    napi_throw_type_error(env, "EINVAL", "bindListen(fd, sockaddr_vm[16], backlog)");
    return NULL;
  }
#if KG_HAVE_VSOCK
  if (bind(fd, (const struct sockaddr *)addr, (socklen_t)len) != 0) return throw_errno(env, errno, "bind");
  if (listen(fd, backlog) != 0) return throw_errno(env, errno, "listen");
  return make_int(env, 0);
#else
  return throw_errno(env, ENOTSUP, "bind");
#endif
}

/* accept(fd) -> { fd, cid, port }, or null when nothing is waiting. */
static napi_value vs_accept(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd, "accept(fd)")) return NULL;
#if KG_HAVE_VSOCK
  struct sockaddr_vm peer;
  socklen_t plen = sizeof peer;
  memset(&peer, 0, sizeof peer);
  int cfd = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (cfd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_null(env);
    return throw_errno(env, errno, "accept");
  }
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "fd", make_int(env, cfd));
  napi_set_named_property(env, out, "cid", make_int(env, peer.svm_cid));
  napi_set_named_property(env, out, "port", make_int(env, peer.svm_port));
  return out;
#else
  return throw_errno(env, ENOTSUP, "accept");
#endif
}

/* Reads (fd, buffer) arguments; throws a TypeError naming `signature` when they are wrong. */
static int fd_and_buffer(napi_env env, napi_callback_info info, int32_t *fd, void **buf, size_t *len, const char *signature) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !get_int(env, argv[0], fd) ||
      !get_bytes(env, argv[1], buf, len, 0)) {
    napi_throw_type_error(env, "EINVAL", signature);
    return 0;
  }
  return 1;
}

/* read(fd, buffer) -> n (0 = EOF), or null when no data is ready. */
static napi_value vs_read(napi_env env, napi_callback_info info) {
  int32_t fd;
  void *buf;
  size_t len;
  if (!fd_and_buffer(env, info, &fd, &buf, &len, "read(fd, buffer)")) return NULL;
  ssize_t n;
  do n = read(fd, buf, len); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_null(env);
    return throw_errno(env, errno, "read");
  }
  return make_int(env, n);
}

/* write(fd, buffer) -> n, or null when the socket buffer is full. */
static napi_value vs_write(napi_env env, napi_callback_info info) {
  int32_t fd;
  void *buf;
  size_t len;
  if (!fd_and_buffer(env, info, &fd, &buf, &len, "write(fd, buffer)")) return NULL;
  ssize_t n;
  do n = write(fd, buf, len); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_null(env);
    return throw_errno(env, errno, "write");
  }
  return make_int(env, n);
}

/* finishConnect(fd) -> 0 once a non-blocking connect is writable; throws its error (syscall "connect") if it failed. */
static napi_value vs_finish_connect(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd, "finishConnect(fd)")) return NULL;
#ifdef __linux__
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return throw_errno(env, errno, "getsockopt");
  if (err != 0) return throw_errno(env, err, "connect");
  return make_int(env, 0);
#else
  return throw_errno(env, ENOTSUP, "getsockopt");
#endif
}

static napi_value vs_shutdown_write(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd, "shutdownWrite(fd)")) return NULL;
#ifdef __linux__
  if (shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) return throw_errno(env, errno, "shutdown");
#endif
  return make_int(env, 0);
}

static napi_value vs_close(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd, "close(fd)")) return NULL;
  if (fd < 0) {
    napi_throw_type_error(env, "EINVAL", "close(fd)");
    return NULL;
  }
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return make_int(env, 0);
}

/* ---- readiness watcher: one uv_poll_t per fd, calling back into JS ---- */

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  int closing;
} watcher_t;

/*
 * Calls a JS callback from a libuv callback as an async resource named `resource`; an exception it throws
 * becomes an uncaught exception of the process (it cannot be returned to anyone).
 */
static void call_js(napi_env env, const char *resource, napi_value recv, napi_value cb, size_t argc, const napi_value *argv) {
  napi_async_context ctx = NULL;
  napi_value resource_name, result;
  napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &ctx);
  napi_status st = napi_make_callback(env, ctx, recv, cb, argc, argv, &result);
  napi_async_destroy(env, ctx);
  if (st == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

static void watcher_closed(uv_handle_t *handle) {
  watcher_t *w = (watcher_t *)handle->data;
  napi_delete_reference(w->env, w->callback);
  free(w);
}

static void watcher_event(uv_poll_t *handle, int status, int events) {
  watcher_t *w = (watcher_t *)handle->data;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  call_js(env, "keygate:vsock", global, cb, 2, argv);
  napi_close_handle_scope(env, scope);
}

static void watcher_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  watcher_t *w = (watcher_t *)data;
  if (!w->closing) {
    w->closing = 1;
    uv_poll_stop(&w->handle);
    uv_close((uv_handle_t *)&w->handle, watcher_closed);
  }
}

/* watch(fd, callback(status, events)) -> watcher */
static napi_value vs_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  napi_valuetype type;
  if (argc < 2 || !get_int(env, argv[0], &fd) || napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "watch(fd, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, ENOMEM, "watch");
  int rc = uv_poll_init(loop, &w->handle, fd);
  if (rc != 0) {
    free(w);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  w->env = env;
  w->handle.data = w;
  napi_create_reference(env, argv[1], 1, &w->callback);
  napi_value obj;
  napi_create_object(env, &obj);
  if (napi_wrap(env, obj, w, watcher_finalize, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "EADDON", "napi_wrap failed");
    return NULL;
  }
  return obj;
}

/* setEvents(watcher, events): 0 stops watching, else UV_READABLE|UV_WRITABLE bits. */
static napi_value vs_set_events(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  watcher_t *w;
  int32_t events;
  if (argc < 2 || napi_unwrap(env, argv[0], (void **)&w) != napi_ok || !get_int(env, argv[1], &events)) {
    napi_throw_type_error(env, "EINVAL", "setEvents(watcher, events)");
    return NULL;
  }
  if (w->closing) return make_int(env, 0);
  int rc = events ? uv_poll_start(&w->handle, events, watcher_event) : uv_poll_stop(&w->handle);
  if (rc != 0) return throw_errno(env, -rc, "uv_poll_start");
  return make_int(env, 0);
}

/* unwatch(watcher): stops and releases the poll handle (before the fd is closed). */
static napi_value vs_unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  watcher_t *w;
  if (argc < 1 || napi_remove_wrap(env, argv[0], (void **)&w) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "unwatch(watcher)");
    return NULL;
  }
  watcher_finalize(env, w, NULL);
  return make_int(env, 0);
}

/* ---- Nitro Security Module ---- */

struct nsm_iovec {
  uint64_t addr;
  uint64_t len;
};
struct nsm_raw {
  struct nsm_iovec request;
  struct nsm_iovec response;
};

static napi_value nsm_open(napi_env env, napi_callback_info info) {
  (void)info;
#ifdef __linux__
  int fd = open("/dev/nsm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open(/dev/nsm)");
  return make_int(env, fd);
#else
  return throw_errno(env, ENOTSUP, "open(/dev/nsm)");
#endif
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  uint8_t *request;
  size_t request_len;
  uint8_t response[NSM_RESPONSE_MAX];
  size_t response_len;
  int err;
} nsm_job_t;

static void nsm_execute(napi_env env, void *data) {
  (void)env;
  nsm_job_t *job = (nsm_job_t *)data;
#ifdef __linux__
  struct nsm_raw msg;
  msg.request.addr = (uint64_t)(uintptr_t)job->request;
  msg.request.len = job->request_len;
  msg.response.addr = (uint64_t)(uintptr_t)job->response;
  msg.response.len = sizeof job->response;
  int rc;
  do rc = ioctl(job->fd, NSM_IOCTL_REQUEST, &msg); while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    job->err = errno;
    return;
  }
  /* The driver rewrites response.len to the bytes it wrote. */
  if (msg.response.len > sizeof job->response) {
    job->err = EMSGSIZE;
    return;
  }
  job->response_len = (size_t)msg.response.len;
#else
  job->err = ENOTSUP;
#endif
}

static void nsm_complete(napi_env env, napi_status status, void *data) {
  nsm_job_t *job = (nsm_job_t *)data;
  if (status != napi_ok && job->err == 0) job->err = ECANCELED;
  if (job->err) {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->err, "NSM ioctl"));
  } else {
    napi_value buffer;
    void *out;
    napi_create_buffer_copy(env, job->response_len, job->response, &out, &buffer);
    napi_resolve_deferred(env, job->deferred, buffer);
  }
  napi_delete_async_work(env, job->work);
  free(job->request);
  free(job);
}

/* nsmRequest(fd, request) -> Promise<Buffer>, run on the thread pool. */
static napi_value nsm_request(napi_env env, napi_callback_info info) {
  int32_t fd;
  void *req;
  size_t len;
  if (!fd_and_buffer(env, info, &fd, &req, &len, "nsmRequest(fd, buffer)")) return NULL;
  if (len == 0 || len > NSM_REQUEST_MAX) return throw_errno(env, EMSGSIZE, "nsmRequest");
  nsm_job_t *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, ENOMEM, "nsmRequest");
  job->request = malloc(len);
  if (!job->request) {
    free(job);
    return throw_errno(env, ENOMEM, "nsmRequest");
  }
  memcpy(job->request, req, len);
  job->request_len = len;
  job->fd = fd;
  napi_value promise, name;
  CHECK(napi_create_promise(env, &job->deferred, &promise));
  napi_create_string_utf8(env, "keygate:nsm", NAPI_AUTO_LENGTH, &name);
  CHECK(napi_create_async_work(env, NULL, name, nsm_execute, nsm_complete, job, &job->work));
  CHECK(napi_queue_async_work(env, job->work));
  return promise;
}


/* ---- splice relay: the forwarder's byte pump, kernel to kernel ----
 *
 * relay(fdA, fdB, idleMs, initialAB, initialBA, callback) takes duplicates of
 * two connected stream sockets and moves bytes both ways with splice(2)
 * through a pipe, on this thread's event loop, without the bytes entering
 * user space or JS. Half-close is relayed (EOF from A becomes shutdown(B,
 * SHUT_WR) once everything before it is written, and the other direction
 * goes on); an error on one socket closes the other with a reset (SO_LINGER
 * 0), so an abort is never turned into a clean end; no traffic for idleMs
 * closes both. callback(reason, code, side, bytesAB, bytesBA) runs once,
 * after every descriptor is closed: reason "end" | "idle" | "closed" |
 * "error" (code: the errno name, side: "a" or "b", or null for neither).
 *
 * Pipes are taken from a small per-thread pool only while a direction has
 * bytes in flight, so idle relays hold no pipe (no kernel pipe memory, and no
 * charge against fs.pipe-user-pages-soft).
 */
#ifdef __linux__
#include <netinet/in.h>
#include <netinet/tcp.h>

#define RELAY_PIPE_SIZE (256 * 1024)
#define RELAY_SPLICE_MAX (1 << 20)
#define RELAY_POOL_MAX 32

typedef struct {
  int fds[RELAY_POOL_MAX][2];
  int len;
} pipe_pool_t;

static _Thread_local pipe_pool_t pipe_pool;
/* Relays of this thread not yet ended (relayStats: tests count descriptors, the bench memory). */
static _Thread_local int32_t relays_active;

typedef struct {
  int src, dst;
  int pipe[2];
  size_t inpipe;
  char *pending;
  size_t pending_len, pending_off;
  int eof, shut;
  double bytes;
} relay_dir_t;

typedef struct {
  napi_env env;
  napi_ref self, callback;
  uv_poll_t poll[2];
  uv_timer_t timer;
  int fd[2];
  int events[2];
  relay_dir_t dir[2]; /* dir[0]: a -> b, dir[1]: b -> a */
  uint64_t idle_ms, last;
  int closing, open_handles;
  const char *reason;
  int err, side;
} relay_t;

static int pool_take(int out[2]) {
  if (pipe_pool.len > 0) {
    pipe_pool.len--;
    out[0] = pipe_pool.fds[pipe_pool.len][0];
    out[1] = pipe_pool.fds[pipe_pool.len][1];
    return 0;
  }
  if (pipe2(out, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
  /* A bigger pipe moves more per splice; refused above fs.pipe-max-size or the per-user soft limit: keep the default. */
  (void)fcntl(out[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
  return 0;
}

/* Only an empty pipe goes back to the pool; one with bytes in it is closed (the bytes are dropped with the relay). */
static void pool_give(relay_dir_t *d) {
  if (d->pipe[0] < 0) return;
  if (d->inpipe == 0 && pipe_pool.len < RELAY_POOL_MAX) {
    pipe_pool.fds[pipe_pool.len][0] = d->pipe[0];
    pipe_pool.fds[pipe_pool.len][1] = d->pipe[1];
    pipe_pool.len++;
  } else {
    close(d->pipe[0]);
    close(d->pipe[1]);
  }
  d->pipe[0] = d->pipe[1] = -1;
  d->inpipe = 0;
}

static int would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

/*
 * Moves what can be moved now in one direction. Returns 0 (done, or waiting
 * for readiness) or a negative errno, with *failed_fd set to the socket at
 * fault (-1 for neither).
 */
static int relay_pump(relay_t *r, relay_dir_t *d, int *failed_fd) {
  for (;;) {
    if (d->pending_off < d->pending_len) {
      ssize_t n = write(d->dst, d->pending + d->pending_off, d->pending_len - d->pending_off);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (would_block(errno)) return 0;
        *failed_fd = d->dst;
        return -errno;
      }
      d->pending_off += (size_t)n;
      d->bytes += (double)n;
      r->last = uv_now(uv_handle_get_loop((uv_handle_t *)&r->timer));
      if (d->pending_off == d->pending_len) {
        free(d->pending);
        d->pending = NULL;
        d->pending_len = d->pending_off = 0;
      }
      continue;
    }
    if (d->inpipe > 0) {
      ssize_t n = splice(d->pipe[0], NULL, d->dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (would_block(errno)) return 0;
        *failed_fd = d->dst;
        return -errno;
      }
      d->inpipe -= (size_t)n;
      d->bytes += (double)n;
      r->last = uv_now(uv_handle_get_loop((uv_handle_t *)&r->timer));
      continue;
    }
    if (d->eof) {
      pool_give(d);
      if (!d->shut) {
        d->shut = 1;
        if (shutdown(d->dst, SHUT_WR) != 0) {
          *failed_fd = d->dst;
          return -errno;
        }
      }
      return 0;
    }
    if (d->pipe[0] < 0) {
      int rc = pool_take(d->pipe);
      if (rc != 0) {
        *failed_fd = -1;
        return rc;
      }
    }
    /* The pipe is empty here, so "would block" can only mean the socket has nothing to read. */
    ssize_t n = splice(d->src, NULL, d->pipe[1], NULL, RELAY_SPLICE_MAX, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (would_block(errno)) {
        pool_give(d);
        return 0;
      }
      *failed_fd = d->src;
      return -errno;
    }
    if (n == 0) {
      d->eof = 1;
      continue;
    }
    d->inpipe = (size_t)n;
  }
}

static void relay_handle_closed(uv_handle_t *handle) {
  relay_t *r = (relay_t *)handle->data;
  if (--r->open_handles == 0) free(r);
}

/* Tells JS the relay has ended (every descriptor already closed); the struct is freed once libuv lets go of its handles. */
static void relay_call_back(relay_t *r) {
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value self, cb, global, argv[5];
  void *unused;
  if (napi_get_reference_value(env, r->self, &self) == napi_ok && self) napi_remove_wrap(env, self, &unused);
  napi_get_reference_value(env, r->callback, &cb);
  napi_get_global(env, &global);
  napi_create_string_utf8(env, r->reason, NAPI_AUTO_LENGTH, &argv[0]);
  if (r->err) napi_create_string_utf8(env, uv_err_name(-r->err), NAPI_AUTO_LENGTH, &argv[1]);
  else napi_get_null(env, &argv[1]);
  if (r->side >= 0) napi_create_string_utf8(env, r->side == 0 ? "a" : "b", NAPI_AUTO_LENGTH, &argv[2]);
  else napi_get_null(env, &argv[2]);
  napi_create_double(env, r->dir[0].bytes, &argv[3]);
  napi_create_double(env, r->dir[1].bytes, &argv[4]);
  napi_delete_reference(env, r->self);
  napi_delete_reference(env, r->callback);
  call_js(env, "keygate:relay", global, cb, 5, argv);
  napi_close_handle_scope(env, scope);
}

/* Ends the relay: closes both sockets (resetting the one opposite a failure) and, once the handles are closed, calls back. */
static void relay_finish(relay_t *r, const char *reason, int err, int failed_fd) {
  if (r->closing) return;
  r->closing = 1;
  relays_active--;
  r->reason = reason;
  r->err = err < 0 ? -err : err;
  r->side = failed_fd < 0 ? -1 : failed_fd == r->fd[0] ? 0 : 1;
  for (int i = 0; i < 2; i++) {
    uv_poll_stop(&r->poll[i]);
    free(r->dir[i].pending);
    r->dir[i].pending = NULL;
    pool_give(&r->dir[i]);
  }
  uv_timer_stop(&r->timer);
  if (err != 0) {
    /* An abort stays an abort: the peer of the healthy socket sees a reset, not an end of stream. */
    struct linger lg = {1, 0};
    for (int i = 0; i < 2; i++)
      if (r->fd[i] != failed_fd) setsockopt(r->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  r->open_handles = 3;
  uv_close((uv_handle_t *)&r->poll[0], relay_handle_closed);
  uv_close((uv_handle_t *)&r->poll[1], relay_handle_closed);
  uv_close((uv_handle_t *)&r->timer, relay_handle_closed);
  /* uv_close has stopped watching; the descriptors are ours (duplicates) to close now. */
  close(r->fd[0]);
  close(r->fd[1]);
  relay_call_back(r);
}

static int dir_wants_read(const relay_dir_t *d) { return !d->eof && d->pending == NULL && d->inpipe == 0; }
static int dir_wants_write(const relay_dir_t *d) { return d->pending != NULL || d->inpipe > 0; }

static void relay_poll_cb(uv_poll_t *handle, int status, int events);

static void relay_update(relay_t *r) {
  if (r->closing) return;
  if (r->dir[0].shut && r->dir[1].shut) {
    relay_finish(r, "end", 0, -1);
    return;
  }
  for (int i = 0; i < 2; i++) {
    /* Socket i is the source of dir[i] and the destination of dir[1 - i]. */
    int ev = (dir_wants_read(&r->dir[i]) ? UV_READABLE : 0) | (dir_wants_write(&r->dir[1 - i]) ? UV_WRITABLE : 0);
    if (ev == r->events[i]) continue;
    int rc = ev ? uv_poll_start(&r->poll[i], ev, relay_poll_cb) : uv_poll_stop(&r->poll[i]);
    if (rc != 0) {
      relay_finish(r, "error", rc, -1);
      return;
    }
    r->events[i] = ev;
  }
}

static void relay_poll_cb(uv_poll_t *handle, int status, int events) {
  relay_t *r = (relay_t *)handle->data;
  if (r->closing) return;
  int i = handle == &r->poll[0] ? 0 : 1;
  int failed = -1;
  if (status < 0) {
    /* libuv reports POLLERR as UV_EBADF; the socket's own error says what happened. */
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(r->fd[i], SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) status = -soerr;
    relay_finish(r, "error", status, r->fd[i]);
    return;
  }
  int rc = 0;
  if (events & UV_READABLE) rc = relay_pump(r, &r->dir[i], &failed);
  if (rc == 0 && (events & UV_WRITABLE)) rc = relay_pump(r, &r->dir[1 - i], &failed);
  if (rc != 0) {
    relay_finish(r, "error", rc, failed);
    return;
  }
  relay_update(r);
}

static void relay_timer_cb(uv_timer_t *timer) {
  relay_t *r = (relay_t *)timer->data;
  if (r->closing) return;
  uint64_t now = uv_now(uv_handle_get_loop((uv_handle_t *)timer));
  if (now - r->last >= r->idle_ms) {
    relay_finish(r, "idle", 0, -1);
    return;
  }
  /* Re-armed here rather than on every byte moved: one timer operation per idle period, not per splice. */
  uv_timer_start(timer, relay_timer_cb, r->idle_ms - (now - r->last), 0);
}

static int copy_initial(napi_env env, napi_value v, relay_dir_t *d) {
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok) return 0;
  if (type == napi_null || type == napi_undefined) return 1;
  void *data;
  size_t len;
  if (!get_bytes(env, v, &data, &len, 0)) return 0;
  if (len == 0) return 1;
  d->pending = malloc(len);
  if (!d->pending) return 0;
  memcpy(d->pending, data, len);
  d->pending_len = len;
  return 1;
}

/* relay(fdA, fdB, idleMs, initialAB | null, initialBA | null, callback) -> handle */
/* Close callback of a relay whose second poll handle could not be set up: frees what the first one kept alive. */
static void relay_setup_failed(uv_handle_t *handle) {
  relay_t *r = handle->data;
  close(r->fd[0]);
  close(r->fd[1]);
  free(r->dir[0].pending);
  free(r->dir[1].pending);
  free(r);
}

static napi_value vs_relay(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fa, fb;
  double idle;
  napi_valuetype type;
  if (argc < 6 || !get_int(env, argv[0], &fa) || !get_int(env, argv[1], &fb) || napi_get_value_double(env, argv[2], &idle) != napi_ok || idle < 0 ||
      napi_typeof(env, argv[5], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "relay(fdA, fdB, idleMs, initialAB, initialBA, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  relay_t *r = calloc(1, sizeof *r);
  if (!r) return throw_errno(env, ENOMEM, "relay");
  for (int i = 0; i < 2; i++) r->dir[i].pipe[0] = r->dir[i].pipe[1] = -1;
  if (!copy_initial(env, argv[3], &r->dir[0]) || !copy_initial(env, argv[4], &r->dir[1])) {
    free(r->dir[0].pending);
    free(r->dir[1].pending);
    free(r);
    napi_throw_type_error(env, "EINVAL", "relay: initial bytes must be a Buffer or null");
    return NULL;
  }
  /* Duplicates: the caller closes its own descriptors (and its net.Socket) right after this call. */
  r->fd[0] = fcntl(fa, F_DUPFD_CLOEXEC, 0);
  int dup_err = errno;
  r->fd[1] = r->fd[0] < 0 ? -1 : fcntl(fb, F_DUPFD_CLOEXEC, 0);
  if (r->fd[1] < 0) dup_err = errno;
  int rc = 0;
  int first_polled = 0;
  if (r->fd[0] >= 0 && r->fd[1] >= 0) {
    rc = uv_poll_init(loop, &r->poll[0], r->fd[0]);
    first_polled = rc == 0;
  }
  if (rc == 0 && r->fd[1] >= 0) rc = uv_poll_init(loop, &r->poll[1], r->fd[1]);
  if (first_polled && rc != 0) {
    /* The first handle is on the loop's handle list: libuv must let go of it before r is freed (and before its fd is closed). */
    int err = -rc;
    r->poll[0].data = r;
    uv_close((uv_handle_t *)&r->poll[0], relay_setup_failed);
    return throw_errno(env, err, "uv_poll_init");
  }
  if (r->fd[0] < 0 || r->fd[1] < 0 || rc != 0) {
    if (r->fd[0] >= 0) close(r->fd[0]);
    if (r->fd[1] >= 0) close(r->fd[1]);
    free(r->dir[0].pending);
    free(r->dir[1].pending);
    free(r);
    return rc != 0 ? throw_errno(env, -rc, "uv_poll_init") : throw_errno(env, dup_err, "fcntl(F_DUPFD_CLOEXEC)");
  }
  uv_timer_init(loop, &r->timer);
  uv_unref((uv_handle_t *)&r->timer);
  r->poll[0].data = r->poll[1].data = r->timer.data = r;
  r->env = env;
  r->side = -1;
  r->dir[0].src = r->dir[1].dst = r->fd[0];
  r->dir[0].dst = r->dir[1].src = r->fd[1];
  int one = 1;
  /* A relay adds no Nagle delay of its own: each end already chose how to batch its writes. */
  for (int i = 0; i < 2; i++) {
    (void)setsockopt(r->fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int fl = fcntl(r->fd[i], F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) (void)fcntl(r->fd[i], F_SETFL, fl | O_NONBLOCK);
  }
  napi_value obj;
  napi_create_object(env, &obj);
  napi_wrap(env, obj, r, NULL, NULL, NULL);
  napi_create_reference(env, obj, 1, &r->self);
  napi_create_reference(env, argv[5], 1, &r->callback);
  r->idle_ms = (uint64_t)idle;
  r->last = uv_now(loop);
  if (r->idle_ms > 0) uv_timer_start(&r->timer, relay_timer_cb, r->idle_ms, 0);
  r->events[0] = r->events[1] = 0;
  relays_active++;
  relay_update(r);
  return obj;
}

/* relayClose(handle): ends a running relay (both sockets closed); false when it has already ended. */
static napi_value vs_relay_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r;
  if (argc < 1 || napi_unwrap(env, argv[0], (void **)&r) != napi_ok || !r) return make_bool(env, false);
  if (r->closing) return make_bool(env, false);
  relay_finish(r, "closed", 0, -1);
  return make_bool(env, true);
}

/* relayStats() -> { active, pooledPipes }: relays running on this thread, empty pipes kept for reuse (2 descriptors each). */
static napi_value vs_relay_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, active, pooled;
  CHECK(napi_create_object(env, &out));
  napi_create_int32(env, relays_active, &active);
  napi_create_int32(env, pipe_pool.len, &pooled);
  napi_set_named_property(env, out, "active", active);
  napi_set_named_property(env, out, "pooledPipes", pooled);
  return out;
}
#endif

#define EXPORT(name, fn)                                                   \
  do {                                                                     \
    napi_value f;                                                          \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);       \
    napi_set_named_property(env, exports, name, f);                        \
  } while (0)

static napi_value init(napi_env env, napi_value exports) {
  EXPORT("available", vs_available);
  EXPORT("socket", vs_socket);
  EXPORT("connect", vs_connect);
  EXPORT("bindListen", vs_bind_listen);
  EXPORT("accept", vs_accept);
  EXPORT("read", vs_read);
  EXPORT("write", vs_write);
  EXPORT("finishConnect", vs_finish_connect);
  EXPORT("shutdownWrite", vs_shutdown_write);
  EXPORT("close", vs_close);
  EXPORT("watch", vs_watch);
  EXPORT("setEvents", vs_set_events);
  EXPORT("unwatch", vs_unwatch);
  EXPORT("nsmOpen", nsm_open);
  EXPORT("nsmRequest", nsm_request);
#ifdef __linux__
  EXPORT("relay", vs_relay);
  EXPORT("relayClose", vs_relay_close);
  EXPORT("relayStats", vs_relay_stats);
#endif
  napi_value readable, writable;
  napi_create_int32(env, UV_READABLE, &readable);
  napi_create_int32(env, UV_WRITABLE, &writable);
  napi_set_named_property(env, exports, "READABLE", readable);
  napi_set_named_property(env, exports, "WRITABLE", writable);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
