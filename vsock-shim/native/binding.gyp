{
  "targets": [
    {
      "target_name": "keygate_vsock",
      "sources": ["keygate_vsock.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
