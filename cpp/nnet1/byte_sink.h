// Where model bytes go. A file target is written to a temporary file beside it
// and renamed over the target only on commit(), so a crash, a full disk or an
// error never leaves a partial model, and `copy X X` is safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace svd {

class ByteSink {
 public:
  explicit ByteSink(std::string name) : name_(std::move(name)) {}
  virtual ~ByteSink() = default;
  ByteSink(const ByteSink&) = delete;
  ByteSink& operator=(const ByteSink&) = delete;

  virtual void write(const char* data, size_t n) = 0;  // throws Error
  virtual void commit() = 0;                           // make the output visible
  virtual void abort() noexcept = 0;                   // discard it
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// "-" is stdout (written through, nothing to rename); an existing device, FIFO
// or socket (/dev/null, a named pipe) is written in place, as cp does; any
// other path is written atomically as described above, through symbolic links.
std::unique_ptr<ByteSink> open_sink(const std::string& path);

// The file an output path stands for: symbolic links are followed, however
// deep (a link's relative target is relative to the link's folder), as cp and
// a shell's '>' write through them; a dangling link gives the path it points
// to. Throws Error for a link loop, a directory, or a folder that does not exist.
std::string output_target(const std::string& path);

// Whether `target` exists and is not a regular file (device, FIFO, socket):
// such an output is written in place, never replaced by a renamed file.
bool is_special_file(const std::string& target);

// A temporary file for `target`, beside it (so the rename is atomic):
// ".<base>.svdistill-<host>.<pid>-XXXXXX" (the pid for people reading the folder), with
// the mode the target will end up with (an existing target's, else 0666 & ~umask). The
// returned descriptor holds an exclusive flock on it until commit_temp (or close):
// temporaries for the same target that nobody holds locked (left by a SIGKILL or a power
// loss) are removed first, so they cannot pile up. `name` is the output as the user gave
// it, for messages. Returns the open descriptor; the path in *tmp.
int create_temp_beside(const std::string& target, const std::string& name, std::string* tmp);

// Makes the finished temporary `tmp` the file `target`: flushed to disk first (and the
// folder after the rename) when `durable` or SVDISTILL_FSYNC is set. `fd`, if >= 0, is
// tmp's open descriptor (holding its lock) and is closed after the rename. On failure tmp
// is removed and Error is thrown.
void commit_temp(int fd, const std::string& tmp, const std::string& target, const std::string& name,
                 bool durable = false);

// Removes temporaries of ours (as create_temp_beside names them, made on this host) in
// `dir` whose names start with `start` and that no process holds locked.
void remove_stale_temps(const std::string& dir, const std::string& start);

}  // namespace svd
