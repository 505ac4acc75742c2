// The README's serving example, built and run by the test suite: a BlockManager hands out pages, paged_kv_write
// stores keys and values in them, a fork shares them until a write needs a private copy, and one plan serves a
// decoding step's paged attention.
#include <ioattn/ioattn.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  using ioattn::DType, ioattn::TensorView;
  const std::int64_t pages = 64, page_size = 16, heads = 8, kv_heads = 2, head_dim = 64, max_pages = 8;
  std::vector<float> k_cache(pages * page_size * kv_heads * head_dim), v_cache(k_cache.size());
  const TensorView k_view = TensorView::contiguous(k_cache.data(), DType::f32, {pages, page_size, kv_heads, head_dim});
  const TensorView v_view = TensorView::contiguous(v_cache.data(), DType::f32, {pages, page_size, kv_heads, head_dim});

  ioattn::BlockManager manager(pages, page_size);
  std::vector<std::int32_t> slots;
  std::vector<ioattn::BlockCopy> copies;
  // Stores rows of keys and values (all equal to `value` here) into the slots the manager handed out.
  const auto write = [&](float value) {
    const auto n = static_cast<std::int64_t>(slots.size());
    std::vector<float> k_new(n * kv_heads * head_dim, value), v_new(k_new.size(), value);
    ioattn::PagedWriteArgs w;
    w.k_new = TensorView::contiguous(k_new.data(), DType::f32, {n, kv_heads, head_dim});
    w.v_new = TensorView::contiguous(v_new.data(), DType::f32, {n, kv_heads, head_dim});
    w.slot_mapping = TensorView::contiguous(slots.data(), DType::i32, {n});
    w.k_cache = k_view;
    w.v_cache = v_view;
    ioattn::paged_kv_write(w);
  };

  try {
    // Prefill: a 40-token prompt. Then a second sample forks it, sharing its three pages.
    const ioattn::SequenceId first = manager.add_sequence();
    manager.append(first, 40, slots, copies);
    write(0.5f);
    const ioattn::SequenceId second = manager.fork(first);

    // One decoding step for both: each appends a token into the shared, partly filled last page, so the manager
    // gives each writer a private copy first (copy-on-write) and says which pages to copy.
    for (const ioattn::SequenceId seq : {first, second}) {
      manager.append(seq, 1, slots, copies);
      for (const ioattn::BlockCopy& c : copies) {
        std::int32_t pair[2] = {c.src, c.dst};
        ioattn::paged_kv_copy_pages(k_view, v_view, TensorView::contiguous(pair, DType::i32, {1, 2}));
      }
      write(seq == first ? 1.0f : -1.0f);
    }

    // Attention of the new token of each sequence over its 41 cached ones.
    const std::vector<ioattn::SequenceId> batch = {first, second};
    std::vector<std::int32_t> table(batch.size() * max_pages), lengths(batch.size());
    manager.block_table(batch, max_pages, table.data(), lengths.data());
    const std::int64_t b = static_cast<std::int64_t>(batch.size());
    std::vector<float> q(b * heads * head_dim, 0.1f), out(q.size());
    ioattn::PagedForwardArgs args;
    args.q = TensorView::contiguous(q.data(), DType::f32, {b, 1, heads, head_dim});
    args.kv = {k_view, v_view, TensorView::contiguous(table.data(), DType::i32, {b, max_pages}),
               TensorView::contiguous(lengths.data(), DType::i32, {b})};
    args.out = TensorView::contiguous(out.data(), DType::f32, {b, 1, heads, head_dim});
    const ioattn::PagedPlan plan = ioattn::paged_attention_plan(args);  // once per batch shape
    ioattn::paged_attention_forward(args, plan);                        // once per layer
    std::printf("sequence 0: out[0] = %g, sequence 1: out[0] = %g, free pages: %d of %d\n", out[0],
                out[heads * head_dim], manager.num_free_pages(), manager.num_pages());
    // Both saw 40 keys of value 0.5 and their own last one (the queries are equal, so are the weights).
    return out[0] > 0.5f && out[heads * head_dim] < 0.5f ? 0 : 1;
  } catch (const ioattn::Error& e) {  // names the bad argument; a full pool leaves the manager unchanged
    std::fprintf(stderr, "ioattn: %s\n", e.what());
    return 1;
  }
}
