{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["weft_native.c"],
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags_c": ["-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
