// A CUDA execution emulator for kiln's tests on machines without a GPU. Generated CUDA C is
// compiled by the host C++ compiler after this header: every CUDA thread of a block is an
// OS thread, blocks run one after another (so a `static` local is exactly one block's
// `__shared__` memory), __syncthreads is a barrier of the block's threads, and warp-level
// operations (shuffles, ldmatrix, mma.sync for f16/bf16/tf32) exchange values through
// per-warp slots between two barriers of the warp's 32 threads. The PTX wrappers of
// lib/codegen/cuda-prelude.ts are re-implemented from the PTX ISA's fragment layouts;
// cp.async copies synchronously.
// This checks the kernels' index arithmetic, synchronization structure, fragment layouts
// and numerics against the reference interpreter; it says nothing about speed.
#pragma once
#define KILN_EMULATOR 1
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

using std::isfinite;
using std::isinf;
using std::signbit;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncwarp() kiln_emu_warp_sync()

struct kiln_dim3 { unsigned x, y, z; };
struct uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };

struct KilnEmuThread { kiln_dim3 tid, bid; };
static thread_local KilnEmuThread kiln_emu_t;
static kiln_dim3 kiln_emu_bdim, kiln_emu_gdim;
#define threadIdx (kiln_emu_t.tid)
#define blockIdx (kiln_emu_t.bid)
#define blockDim kiln_emu_bdim
#define gridDim kiln_emu_gdim

struct KilnEmuBlock {
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;  // 8 per thread
  std::vector<unsigned char> smem;
  explicit KilnEmuBlock(unsigned n, size_t smemBytes) : block(n), slots(8 * n), smem(smemBytes + 16) {
    for (unsigned w = 0; w < (n + 31) / 32; w++) warps.emplace_back(new std::barrier<>(n - 32 * w < 32 ? n - 32 * w : 32));
  }
};
static KilnEmuBlock* kiln_emu_b;

#define KILN_DYNAMIC_SMEM(name) uint4* name = reinterpret_cast<uint4*>(kiln_emu_b->smem.data())

static inline void __syncthreads() { kiln_emu_b->block.arrive_and_wait(); }
static inline void kiln_emu_warp_sync() { kiln_emu_b->warps[threadIdx.x / 32]->arrive_and_wait(); }
static inline uint64_t* kiln_emu_slot(unsigned thread) { return &kiln_emu_b->slots[8 * thread]; }
static inline unsigned kiln_emu_lane() { return threadIdx.x % 32; }
static inline unsigned kiln_emu_lane0() { return threadIdx.x - threadIdx.x % 32; }

template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int o) {
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  kiln_emu_slot(threadIdx.x)[0] = bits;
  kiln_emu_warp_sync();
  const uint64_t got = kiln_emu_slot(kiln_emu_lane0() + (kiln_emu_lane() ^ (unsigned)o))[0];
  kiln_emu_warp_sync();
  T out;
  memcpy(&out, &got, sizeof(T));
  return out;
}

static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

// float16 <-> float in software (round to nearest even), as lib/codegen/prelude.ts does.
static inline float kiln_h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
  if (e != 0) return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
  float f = (float)m * 5.9604644775390625e-8f;
  return sign ? -f : f;
}
static inline uint16_t kiln_f2h(float f) {
  uint32_t x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7e00u;
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (ax < 0x38800000u) {
    if (ax < 0x33000000u) return (uint16_t)sign;
    uint32_t shift = 126u - (ax >> 23), mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t r = ax - 0x38000000u, q = r >> 13, rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
  return (uint16_t)(sign | q);
}

// ldmatrix .x4: lane l gives row l%8 of matrix l/8; thread t receives, per matrix, row t/4,
// columns 2(t%4), 2(t%4)+1 (.trans: the transposed matrix's, i.e. stored rows 2(t%4)+e, column t/4).
static inline void kiln_emu_ldsm(uint32_t* r, const void* p, bool trans) {
  kiln_emu_slot(threadIdx.x)[0] = (uint64_t)(uintptr_t)p;
  kiln_emu_warp_sync();
  const unsigned t = kiln_emu_lane();
  for (int i = 0; i < 4; i++) {
    uint16_t e[2];
    for (int h = 0; h < 2; h++) {
      const unsigned row = trans ? 2 * (t % 4) + h : t / 4;
      const unsigned col = trans ? t / 4 : 2 * (t % 4) + h;
      const uint16_t* rowp = (const uint16_t*)(uintptr_t)kiln_emu_slot(kiln_emu_lane0() + 8 * i + row)[0];
      e[h] = rowp[col];
    }
    r[i] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
  }
  kiln_emu_warp_sync();
}
static inline void kiln_ldsm_x4(uint32_t* r, const void* p) { kiln_emu_ldsm(r, p, false); }
static inline void kiln_ldsm_x4_t(uint32_t* r, const void* p) { kiln_emu_ldsm(r, p, true); }

// mma.sync m16n8k16 row.col, f32 accumulators. Fragments (groupID g = lane/4, tq = lane%4):
// A a0..a7: (g, 2tq+{0,1}), (g+8, ..), (g, 2tq+8+{0,1}), (g+8, 2tq+8+..) in registers of 2;
// B b0..b3: (k = 2tq+{0,1}, n = g), (k = 2tq+8+{0,1}, n = g); C c0..c3: (g, 2tq+{0,1}), (g+8, ..).
static inline float kiln_emu_bf(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
// This lane's C fragment of an m16n8 MMA (c0, c1: row g, columns 2tq, 2tq+1; c2, c3: row
// g+8), plus K products of A(row, k) and B(k, col), in k order.
template <typename FA, typename FB>
static inline void kiln_emu_mma_acc(float* c, unsigned K, FA A, FB B) {
  const unsigned t = kiln_emu_lane(), g = t / 4, tq = t % 4;
  for (int i = 0; i < 4; i++) {
    const unsigned r = g + (i >= 2 ? 8 : 0), n = 2 * tq + i % 2;
    float acc = c[i];
    for (unsigned k = 0; k < K; k++) acc += A(r, k) * B(k, n);
    c[i] = acc;
  }
}
static inline void kiln_emu_mma(float* c, const uint32_t* a, const uint32_t* b, bool bf16) {
  uint64_t* s = kiln_emu_slot(threadIdx.x);
  s[0] = a[0]; s[1] = a[1]; s[2] = a[2]; s[3] = a[3]; s[4] = b[0]; s[5] = b[1];
  kiln_emu_warp_sync();
  auto half = [&](unsigned lane, int reg, int h) -> float {
    const uint16_t v = (uint16_t)(kiln_emu_slot(kiln_emu_lane0() + lane)[reg] >> (16 * h));
    return bf16 ? kiln_emu_bf(v) : kiln_h2f(v);
  };
  auto A = [&](unsigned r, unsigned k) { return half((r % 8) * 4 + (k % 8) / 2, (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0), k % 2); };
  auto B = [&](unsigned k, unsigned n) { return half(n * 4 + (k % 8) / 2, 4 + (k >= 8 ? 1 : 0), k % 2); };
  kiln_emu_mma_acc(c, 16, A, B);
  kiln_emu_warp_sync();
}
static inline void kiln_mma_f16(float* c, const uint32_t* a, const uint32_t* b) { kiln_emu_mma(c, a, b, false); }
static inline void kiln_mma_bf16(float* c, const uint32_t* a, const uint32_t* b) { kiln_emu_mma(c, a, b, true); }

// cvt.rna.tf32.f32: round to nearest, ties away from zero, at the 13th mantissa bit (adding
// half a tf32 ulp to the magnitude and truncating); NaN passes through, inf stays inf, and a
// value past the largest finite tf32 by half an ulp or more becomes inf.
static inline uint32_t kiln_tf32(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return u;
  return (u + 0x1000u) & 0xffffe000u;
}

// mma.sync m16n8k8 row.col tf32, f32 accumulators. Fragments (g = lane/4, tq = lane%4):
// A a0..a3: (g, tq), (g+8, tq), (g, tq+4), (g+8, tq+4); B b0, b1: (k = tq, n = g),
// (k = tq+4, n = g); C as m16n8k16's. The tensor cores read the tf32 bits of each operand
// register (the low 13 are ignored); products of two tf32 values are exact in float.
static inline void kiln_mma_tf32(float* c, const uint32_t* a, const uint32_t* b) {
  uint64_t* s = kiln_emu_slot(threadIdx.x);
  s[0] = a[0]; s[1] = a[1]; s[2] = a[2]; s[3] = a[3]; s[4] = b[0]; s[5] = b[1];
  kiln_emu_warp_sync();
  auto op = [&](unsigned lane, int reg) { return __uint_as_float((uint32_t)kiln_emu_slot(kiln_emu_lane0() + lane)[reg] & 0xffffe000u); };
  auto A = [&](unsigned r, unsigned k) { return op((r % 8) * 4 + k % 4, (r >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)); };
  auto B = [&](unsigned k, unsigned n) { return op(n * 4 + k % 4, 4 + (k >= 4 ? 1 : 0)); };
  kiln_emu_mma_acc(c, 8, A, B);
  kiln_emu_warp_sync();
}

static inline void kiln_cp_async16(void* s, const void* g, bool valid) {
  if (valid) memcpy(s, g, 16);
  else memset(s, 0, 16);
}
static inline void kiln_cp_commit() {}
template <int N> static inline void kiln_cp_wait() {}

/**
 * Runs `fn` as a grid of blocks of `threads` threads; blocks one after another. A kernel
 * whose threads disagree about barriers (a __syncthreads or a shuffle not reached by all)
 * would hang here forever: a watchdog aborts the process after 180 s instead.
 */
static void kiln_emu_launch(const char* name, const unsigned* grid, unsigned threads, size_t smemBytes, const std::function<void()>& fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(180), [&] { return done; })) {
      fprintf(stderr, "kiln CUDA emulator: %s did not finish in 180 s (threads waiting at different barriers?)\n", name);
      abort();
    }
  });
  kiln_emu_gdim = {grid[0], grid[1], grid[2]};
  kiln_emu_bdim = {threads, 1, 1};
  KilnEmuBlock b(threads, smemBytes);
  kiln_emu_b = &b;
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
          for (unsigned x = 0; x < grid[0]; x++) {
            kiln_emu_t = {{t, 0, 0}, {x, y, z}};
            fn();
            b.block.arrive_and_wait();  // the next block reuses shared memory
          }
    });
  }
  for (auto& th : ts) th.join();
  kiln_emu_b = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
}
