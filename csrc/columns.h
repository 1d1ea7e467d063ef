// Zero-copy views over Arrow columns imported through the C data interface.
//
// A column is a sequence of chunks (one per record batch of every file, in
// corpus order). The column keeps alive the memory behind every chunk's
// buffers for exactly as long as it lives: either the ArrowArray/ArrowSchema
// the chunk was moved out of, or, when the chunk lies inside a region the
// column holds (a whole memory-mapped file, see hold_region()), that region
// alone. Global row numbers run across chunks; a row is located by
// a binary search over the chunks' first rows, so the index costs memory per
// chunk, not per row. Token prefix sums over all rows (8 bytes a row) are built
// only when first asked for.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "arrow_c_abi.h"

namespace arrowloader {

// Owns one imported array and its schema; releases both on destruction.
class ImportedArray {
 public:
  // Moves the structs out of the producer's (release set to null there).
  ImportedArray(ArrowSchema* schema, ArrowArray* array);
  ~ImportedArray();
  ImportedArray(const ImportedArray&) = delete;
  ImportedArray& operator=(const ImportedArray&) = delete;

  const ArrowSchema& schema() const { return schema_; }
  const ArrowArray& array() const { return array_; }

 private:
  ArrowSchema schema_;
  ArrowArray array_;
};

// Where a chunk came from, for error messages.
struct ChunkOrigin {
  std::string file;
  int64_t first_row_in_file = 0;  // row of the file where this chunk starts
};

// kInt8, kUInt8 and kBool only in narrow columns (masks, token type ids beside the
// tokens). kBool values are bit-packed, as Arrow stores booleans: a row of them starts at
// a bit, not a byte (TokenRow::first_bit).
enum class TokenType : uint8_t { kInt32, kInt64, kUInt16, kUInt32, kInt8, kUInt8, kBool };

const char* token_type_name(TokenType type);
// Bytes of one token of `type`. Inline and a table load, no branch: the copy loops ask it
// for every row (a switch here compiles to a bounds check as well on that path). 0 for
// kBool, whose values are bits: every reader of them goes through first_bit, and a path
// that forgot to would read the row's first byte again, never past it.
constexpr size_t token_size(TokenType type) {
  constexpr size_t kBytes[] = {4, 8, 2, 4, 1, 1, 0};  // in TokenType's order
  return kBytes[static_cast<uint8_t>(type)];
}

// One record batch's list<int> column, already shifted by the array offsets.
struct ListChunk {
  const void* offsets = nullptr;  // int32_t* or int64_t*, rows + 1 entries
  const void* values = nullptr;   // TokenType elements
  bool large_offsets = false;
  TokenType type = TokenType::kInt32;
  int64_t rows = 0;
  int64_t num_values = 0;
  // kBool: `values` is the bitmap's first byte and value i is bit value_bit_offset + i.
  int64_t value_bit_offset = 0;

  int64_t offset_at(int64_t i) const {
    return large_offsets ? static_cast<const int64_t*>(offsets)[i]
                         : static_cast<const int32_t*>(offsets)[i];
  }
};

// A view of one row of tokens: `length` elements of `type` at `data` (for kBool: bits
// first_bit .. first_bit + length of the bitmap at `data`).
struct TokenRow {
  const void* data;
  int64_t length;
  TokenType type;
  int64_t first_bit = 0;
};

// A list<int32|int64|uint16|uint32> (or large_list) column over many chunks.
class TokenColumn {
 public:
  // narrow: also accept int8, uint8 and bool values (a mask or token type ids, not tokens).
  explicit TokenColumn(std::string name, bool narrow = false)
      : name_(std::move(name)), narrow_(narrow) {}

  // Imports one chunk, checks its type, nulls and offsets (one pass over the
  // offsets) and appends it. Throws CorpusFormatError naming file, column and
  // row. On error the chunk is released and the column is unchanged.
  //
  // check_offsets = false skips the pass over the offsets, for a chunk whose
  // file an index cache vouches for; the O(1) checks (type, buffers present,
  // first offset >= 0, last offset within the values and not before the
  // first) and the null checks still run.
  void add_chunk(ArrowSchema* schema, ArrowArray* array, ChunkOrigin origin,
                 bool check_offsets = true);

  // Runs the offsets pass over chunks [begin, end) (added unchecked); throws
  // CorpusFormatError like add_chunk() would have.
  void check_chunk_offsets(size_t begin, size_t end);

  // Keeps `array` (a uint8 array over a region of memory, typically a whole
  // memory-mapped file) alive as long as the column. A chunk added later whose
  // every buffer lies inside the latest held region releases its own imported
  // array at once: Arrow's objects behind one record batch cost ~3 KB, which
  // for small record batches outweighs the index itself.
  void hold_region(ArrowSchema* schema, ArrowArray* array);
  // Imported arrays the column keeps alive (held regions and chunks outside them).
  size_t held_arrays() const { return owners_.size(); }
  // Tells the kernel that the held regions (the mapped files) are read in random
  // order: no read-around on page faults (page_advice.h). Returns the regions that
  // took the advice.
  int64_t advise_random_access() const;

  // After freeze() add_chunk() throws: assemblers read the column from
  // native threads, so it must not change under them.
  void freeze() { frozen_ = true; }

  // With vocab_size > 0, every token copied out of the column must lie in
  // [0, vocab_size); copy_row() throws CorpusFormatError naming the row
  // otherwise. 0 checks nothing. Set before the column is frozen.
  void set_vocab_size(int64_t vocab_size);
  int64_t vocab_size() const { return vocab_size_; }

  const std::string& name() const { return name_; }
  int64_t num_rows() const { return starts_.back(); }
  int64_t num_tokens() const { return num_tokens_; }
  size_t num_chunks() const { return chunks_.size(); }
  // Chunks whose offsets were checked so far (by add_chunk or check_chunk_offsets).
  size_t checked_chunks() const { return checked_chunks_; }

  // Row `global` (0 <= global < num_rows(), checked by the caller).
  TokenRow row(int64_t global) const;
  int64_t row_length(int64_t global) const;
  // Throws std::out_of_range naming the index unless 0 <= global < num_rows().
  void check_index(int64_t global) const;
  // "FILE: column 'NAME' row N" for messages about global row `global`.
  std::string describe_row(int64_t global) const;
  // The same place in another column of the same files (row-aligned with this one).
  std::string describe_row(int64_t global, const std::string& column) const;

  // Tokens that truncating every row to max_length would drop, and the number
  // of rows it would shorten.
  std::pair<int64_t, int64_t> truncation_loss(int64_t max_length) const;

  // Token prefix sums, num_rows() + 1 entries: entry r is the number of tokens
  // in rows before r, so row r's length is entry r + 1 minus entry r, in O(1)
  // and without the chunk search. Built on the first call (one pass over the
  // offsets, 8 bytes a row), then shared; safe to call from several threads.
  // Once built, add_chunk() throws, as after freeze().
  const std::vector<int64_t>& token_offsets() const;
  bool has_token_offsets() const {
    return token_offsets_ready_.load(std::memory_order_acquire);
  }

 private:
  size_t chunk_of(int64_t global) const;
  // The chunk of row `global` and the row's [begin, end) within the chunk's
  // values. Throws CorpusFormatError if they do not lie inside the values: the
  // offsets of a chunk whose offsets pass was skipped (an index cache vouched
  // for its file) are still never followed outside its buffers.
  size_t span_of(int64_t global, int64_t* begin, int64_t* end) const;
  void check_offsets_of(size_t c) const;
  bool in_region(const void* data, int64_t bytes) const;

  std::string name_;
  bool narrow_ = false;
  std::vector<std::unique_ptr<ImportedArray>> owners_;
  uintptr_t region_begin_ = 0;  // the latest held region, [begin, end)
  uintptr_t region_end_ = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> regions_;  // every held region
  std::vector<ListChunk> chunks_;
  std::vector<ChunkOrigin> origins_;
  std::vector<int64_t> starts_{0};  // chunks_.size() + 1 entries
  int64_t num_tokens_ = 0;
  size_t checked_chunks_ = 0;
  int64_t vocab_size_ = 0;
  bool frozen_ = false;
  // Lazily built by token_offsets(); mutable because building them changes no
  // observable value of the column, only caches one.
  mutable std::once_flag token_offsets_once_;
  mutable std::atomic<bool> token_offsets_ready_{false};
  mutable std::vector<int64_t> token_offsets_;
};

// A scalar integer column (int8 .. uint64) over many chunks, read as int64.
class ScalarColumn {
 public:
  explicit ScalarColumn(std::string name) : name_(std::move(name)) {}

  void add_chunk(ArrowSchema* schema, ArrowArray* array, ChunkOrigin origin);
  void freeze() { frozen_ = true; }

  const std::string& name() const { return name_; }
  int64_t num_rows() const { return starts_.back(); }
  int64_t value(int64_t global) const;

 private:
  struct Chunk {
    const void* values = nullptr;
    char format = 'l';
    int64_t rows = 0;
  };

  std::string name_;
  std::vector<std::unique_ptr<ImportedArray>> owners_;
  std::vector<Chunk> chunks_;
  std::vector<int64_t> starts_{0};
  bool frozen_ = false;
};

}  // namespace arrowloader
