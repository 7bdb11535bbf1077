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
  napi_value cb, global, argv[2], result;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  napi_async_context ctx = NULL;
  napi_value resource_name;
  napi_create_string_utf8(env, "keygate:vsock", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &ctx);
  napi_status st = napi_make_callback(env, ctx, global, cb, 2, argv, &result);
  napi_async_destroy(env, ctx);
  if (st == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
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
  napi_value readable, writable;
  napi_create_int32(env, UV_READABLE, &readable);
  napi_create_int32(env, UV_WRITABLE, &writable);
  napi_set_named_property(env, exports, "READABLE", readable);
  napi_set_named_property(env, exports, "WRITABLE", writable);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
