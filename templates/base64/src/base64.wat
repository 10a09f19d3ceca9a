;; SPDX-License-Identifier: Apache-2.0
;;
;; base64: standard base64 (RFC 4648, section 4, with padding) as a WASI
;; preview-1 command.
;;
;;   base64              encode stdin; output is one line plus "\n"
;;   base64 -d           decode stdin (also --decode); whitespace is ignored,
;;                       padding is required, nothing may follow it
;;
;; Input is streamed through fixed buffers, so any input size works.
;; Exit codes: 0 ok, 1 invalid input or I/O error (message on stderr),
;; 2 usage error. While decoding, the output of each read (at most 48 KiB
;; of input) is written only once the next read has succeeded, or for the
;; last read, after the end-of-input checks. If decoding fails, output of
;; earlier reads has already been written, but nothing from the read where
;; the error was found: an input that arrives in one read never leaves
;; partial output behind.
;;
;; Linear memory map (2 pages = 128 KiB):
;;        0  iovec {ptr, len} for fd_read / fd_write
;;        8  nread / nwritten result
;;       16  argc, 20 argv buffer size (args_sizes_get)
;;       64  encoding alphabet (64 bytes)
;;      128  decoding table (256 bytes: sextet value, or 0xFF if invalid)
;;      384  scratch for formatting a decimal number (ends at 448)
;;      512  NUL-terminated messages
;;     1024  argv pointers (argc <= 2), 2048..4096 argv strings
;;     8192  input buffer, 49152 bytes (a multiple of 3)
;;    65536  output buffer, 65536 bytes (4/3 of the input buffer)
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 2)

  (global $IN i32 (i32.const 8192))
  (global $IN_SIZE i32 (i32.const 49152))
  (global $OUT i32 (i32.const 65536))
  (global $ALPHABET i32 (i32.const 64))
  (global $DECODE i32 (i32.const 128))
  (global $NUM_END i32 (i32.const 448))
  (global $ARGV i32 (i32.const 1024))
  (global $ARGV_BUF i32 (i32.const 2048))
  (global $ARGV_BUF_SIZE i32 (i32.const 2048))

  (data (i32.const 64) "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
  (data (i32.const 512) "base64: invalid character at offset \00")
  (data (i32.const 576) "base64: misplaced padding at offset \00")
  (data (i32.const 640) "base64: data after padding at offset \00")
  (data (i32.const 704) "base64: truncated input (missing padding)\n\00")
  (data (i32.const 768) "base64: error reading standard input\n\00")
  (data (i32.const 832) "base64: error writing standard output\n\00")
  (data (i32.const 896) "base64: usage: base64 [-d|--decode] < input\n\00")
  (data (i32.const 960) "-d\00")
  (data (i32.const 968) "--decode\00")
  (data (i32.const 984) "\n\00")
  (global $MSG_BAD_CHAR i32 (i32.const 512))
  (global $MSG_BAD_PAD i32 (i32.const 576))
  (global $MSG_AFTER_PAD i32 (i32.const 640))
  (global $MSG_TRUNCATED i32 (i32.const 704))
  (global $MSG_READ i32 (i32.const 768))
  (global $MSG_WRITE i32 (i32.const 832))
  (global $MSG_USAGE i32 (i32.const 896))
  (global $OPT_D i32 (i32.const 960))
  (global $OPT_DECODE i32 (i32.const 968))
  (global $NEWLINE i32 (i32.const 984))

  ;; ---- small helpers ----

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; 1 if the NUL-terminated strings at $a and $b are equal.
  (func $streq (param $a i32) (param $b i32) (result i32)
    (local $c i32)
    (loop $next
      (local.set $c (i32.load8_u (local.get $a)))
      (if (i32.ne (local.get $c) (i32.load8_u (local.get $b)))
        (then (return (i32.const 0))))
      (if (i32.eqz (local.get $c))
        (then (return (i32.const 1))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $next))
    (unreachable))

  ;; Writes all of [ptr, ptr+len) to fd, retrying short writes.
  ;; Returns 0 on success, 1 on error.
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (local $n i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (return (i32.const 1))))
        (local.set $n (i32.load (i32.const 8)))
        ;; no progress, or a bogus count: give up instead of looping
        (if (i32.or (i32.eqz (local.get $n)) (i32.gt_u (local.get $n) (local.get $len)))
          (then (return (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $more)))
    (i32.const 0))

  ;; Reads up to $len bytes into $ptr. Returns the count (0 at end of input),
  ;; or -1 on error.
  (func $read (param $ptr i32) (param $len i32) (result i32)
    (local $n i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (return (i32.const -1))))
    (local.set $n (i32.load (i32.const 8)))
    (if (i32.gt_u (local.get $n) (local.get $len))
      (then (return (i32.const -1))))
    (local.get $n))

  ;; Writes a NUL-terminated message to stderr (best effort).
  (func $say (param $msg i32)
    (drop (call $write_all (i32.const 2) (local.get $msg) (call $strlen (local.get $msg)))))

  (func $die (param $msg i32) (param $code i32)
    (call $say (local.get $msg))
    (call $proc_exit (local.get $code))
    (unreachable))

  ;; "<msg><offset>\n" on stderr, exit 1.
  (func $die_at (param $msg i32) (param $offset i64)
    (local $p i32)
    (call $say (local.get $msg))
    ;; decimal digits, written backwards ending at $NUM_END
    (local.set $p (global.get $NUM_END))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p)
        (i64.add (i64.const 48) (i64.rem_u (local.get $offset) (i64.const 10))))
      (local.set $offset (i64.div_u (local.get $offset) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $offset) (i64.const 0))))
    (drop (call $write_all (i32.const 2) (local.get $p)
      (i32.sub (global.get $NUM_END) (local.get $p))))
    (call $die (global.get $NEWLINE) (i32.const 1)))

  (func $flush (param $end i32)
    (if (call $write_all (i32.const 1) (global.get $OUT)
          (i32.sub (local.get $end) (global.get $OUT)))
      (then (call $die (global.get $MSG_WRITE) (i32.const 1)))))

  ;; Stores the alphabet character for sextet ($v >> $shift) & 63 at $o.
  (func $put_sextet (param $o i32) (param $v i32) (param $shift i32)
    (i32.store8 (local.get $o)
      (i32.load8_u (i32.add (global.get $ALPHABET)
        (i32.and (i32.shr_u (local.get $v) (local.get $shift)) (i32.const 63))))))

  ;; ---- encoding ----

  (func $encode
    (local $carry i32) ;; 0..2 bytes left over at the start of $IN
    (local $n i32)
    (local $total i32)
    (local $full i32)  ;; bytes that form whole 3-byte groups
    (local $i i32)
    (local $o i32)
    (local $v i32)
    (block $eof
      (loop $chunk
        (local.set $n (call $read
          (i32.add (global.get $IN) (local.get $carry))
          (i32.sub (global.get $IN_SIZE) (local.get $carry))))
        (if (i32.lt_s (local.get $n) (i32.const 0))
          (then (call $die (global.get $MSG_READ) (i32.const 1))))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $carry) (local.get $n)))
        (local.set $full (i32.sub (local.get $total) (i32.rem_u (local.get $total) (i32.const 3))))
        ;; every 3 input bytes become 4 characters
        (local.set $i (i32.const 0))
        (local.set $o (global.get $OUT))
        (block $groups_done
          (loop $group
            (br_if $groups_done (i32.ge_u (local.get $i) (local.get $full)))
            (local.set $v (i32.or (i32.or
              (i32.shl (i32.load8_u (i32.add (global.get $IN) (local.get $i))) (i32.const 16))
              (i32.shl (i32.load8_u (i32.add (global.get $IN) (i32.add (local.get $i) (i32.const 1)))) (i32.const 8)))
              (i32.load8_u (i32.add (global.get $IN) (i32.add (local.get $i) (i32.const 2))))))
            (call $put_sextet (local.get $o) (local.get $v) (i32.const 18))
            (call $put_sextet (i32.add (local.get $o) (i32.const 1)) (local.get $v) (i32.const 12))
            (call $put_sextet (i32.add (local.get $o) (i32.const 2)) (local.get $v) (i32.const 6))
            (call $put_sextet (i32.add (local.get $o) (i32.const 3)) (local.get $v) (i32.const 0))
            (local.set $i (i32.add (local.get $i) (i32.const 3)))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (br $group)))
        (call $flush (local.get $o))
        ;; keep the 0..2 bytes that did not make a whole group
        (local.set $carry (i32.sub (local.get $total) (local.get $full)))
        ;; (always copies 2 bytes; those beyond $carry are junk that is never
        ;; read, and $IN + $full + 1 is still inside the input buffer's page)
        (i32.store8 (global.get $IN) (i32.load8_u (i32.add (global.get $IN) (local.get $full))))
        (i32.store8 (i32.add (global.get $IN) (i32.const 1))
          (i32.load8_u (i32.add (global.get $IN) (i32.add (local.get $full) (i32.const 1)))))
        (br $chunk)))

    ;; final partial group, padded with '=', then the newline
    (local.set $o (global.get $OUT))
    (if (local.get $carry)
      (then
        (local.set $v (i32.shl (i32.load8_u (global.get $IN)) (i32.const 16)))
        (if (i32.eq (local.get $carry) (i32.const 2))
          (then (local.set $v (i32.or (local.get $v)
            (i32.shl (i32.load8_u (i32.add (global.get $IN) (i32.const 1))) (i32.const 8))))))
        (call $put_sextet (local.get $o) (local.get $v) (i32.const 18))
        (call $put_sextet (i32.add (local.get $o) (i32.const 1)) (local.get $v) (i32.const 12))
        (if (i32.eq (local.get $carry) (i32.const 2))
          (then (call $put_sextet (i32.add (local.get $o) (i32.const 2)) (local.get $v) (i32.const 6)))
          (else (i32.store8 (i32.add (local.get $o) (i32.const 2)) (i32.const 61)))) ;; '='
        (i32.store8 (i32.add (local.get $o) (i32.const 3)) (i32.const 61))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))))
    (i32.store8 (local.get $o) (i32.const 10))
    (call $flush (i32.add (local.get $o) (i32.const 1))))

  ;; ---- decoding ----

  (func $init_decode_table
    (local $i i32)
    (loop $invalid ;; every byte is invalid ...
      (i32.store8 (i32.add (global.get $DECODE) (local.get $i)) (i32.const 255))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $invalid (i32.lt_u (local.get $i) (i32.const 256))))
    (local.set $i (i32.const 0))
    (loop $next ;; ... except the 64 alphabet characters
      (i32.store8
        (i32.add (global.get $DECODE) (i32.load8_u (i32.add (global.get $ALPHABET) (local.get $i))))
        (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 64)))))

  (func $decode
    (local $n i32)
    (local $i i32)
    (local $o i32)
    (local $c i32)
    (local $v i32)
    (local $acc i32)     ;; sextets of the current 4-character group
    (local $q i32)       ;; characters in the current group, 0..3
    (local $pad i32)     ;; 1 after "xx=": the group needs a second '='
    (local $done i32)    ;; 1 once padding ended the data
    (local $offset i64)  ;; input bytes before the current chunk
    (local.set $o (global.get $OUT)) ;; no output pending yet
    (block $eof
      (loop $chunk
        (local.set $n (call $read (global.get $IN) (global.get $IN_SIZE)))
        (if (i32.lt_s (local.get $n) (i32.const 0))
          (then (call $die (global.get $MSG_READ) (i32.const 1))))
        (br_if $eof (i32.eqz (local.get $n)))
        ;; The previous chunk's output is written only now, so that an input
        ;; read in one go never produces partial output when it is invalid.
        (call $flush (local.get $o))
        (local.set $i (i32.const 0))
        (local.set $o (global.get $OUT))
        (block $chunk_done
          (loop $char
            (br_if $chunk_done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (i32.add (global.get $IN) (local.get $i))))
            (block $next
              ;; skip whitespace: space, \t \n \v \f \r
              (br_if $next (i32.or (i32.eq (local.get $c) (i32.const 32))
                (i32.le_u (i32.sub (local.get $c) (i32.const 9)) (i32.const 4))))
              (if (i32.eq (local.get $c) (i32.const 61)) ;; '='
                (then
                  ;; padding may only take the 3rd and 4th place of a group
                  (if (i32.or (local.get $done) (i32.lt_u (local.get $q) (i32.const 2)))
                    (then (call $die_at (global.get $MSG_BAD_PAD)
                      (i64.add (local.get $offset) (i64.extend_i32_u (local.get $i))))))
                  (if (i32.eq (local.get $q) (i32.const 2))
                    (then ;; "xx=": one more '=' must follow
                      (local.set $q (i32.const 3))
                      (local.set $pad (i32.const 1))
                      (br $next)))
                  (if (local.get $pad)
                    (then ;; "xx==": 12 bits, 1 byte
                      (i32.store8 (local.get $o) (i32.shr_u (local.get $acc) (i32.const 4)))
                      (local.set $o (i32.add (local.get $o) (i32.const 1))))
                    (else ;; "xxx=": 18 bits, 2 bytes
                      (i32.store8 (local.get $o) (i32.shr_u (local.get $acc) (i32.const 10)))
                      (i32.store8 (i32.add (local.get $o) (i32.const 1)) (i32.shr_u (local.get $acc) (i32.const 2)))
                      (local.set $o (i32.add (local.get $o) (i32.const 2)))))
                  (local.set $done (i32.const 1))
                  (local.set $q (i32.const 0))
                  (local.set $pad (i32.const 0))
                  (local.set $acc (i32.const 0))
                  (br $next)))
              (local.set $v (i32.load8_u (i32.add (global.get $DECODE) (local.get $c))))
              (if (i32.eq (local.get $v) (i32.const 255))
                (then (call $die_at (global.get $MSG_BAD_CHAR)
                  (i64.add (local.get $offset) (i64.extend_i32_u (local.get $i))))))
              (if (local.get $pad) ;; "xx=" followed by a data character
                (then (call $die_at (global.get $MSG_BAD_PAD)
                  (i64.add (local.get $offset) (i64.extend_i32_u (local.get $i))))))
              (if (local.get $done)
                (then (call $die_at (global.get $MSG_AFTER_PAD)
                  (i64.add (local.get $offset) (i64.extend_i32_u (local.get $i))))))
              (local.set $acc (i32.or (i32.shl (local.get $acc) (i32.const 6)) (local.get $v)))
              (local.set $q (i32.add (local.get $q) (i32.const 1)))
              (if (i32.eq (local.get $q) (i32.const 4))
                (then ;; a whole group: 24 bits, 3 bytes (store8 keeps the low 8 bits)
                  (i32.store8 (local.get $o) (i32.shr_u (local.get $acc) (i32.const 16)))
                  (i32.store8 (i32.add (local.get $o) (i32.const 1)) (i32.shr_u (local.get $acc) (i32.const 8)))
                  (i32.store8 (i32.add (local.get $o) (i32.const 2)) (local.get $acc))
                  (local.set $o (i32.add (local.get $o) (i32.const 3)))
                  (local.set $q (i32.const 0))
                  (local.set $acc (i32.const 0)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $char)))
        ;; $OUT now holds at most 3 bytes per 4 characters (+3 for a group
        ;; begun in the previous chunk): well within its 64 KiB.
        (local.set $offset (i64.add (local.get $offset) (i64.extend_i32_u (local.get $n))))
        (br $chunk)))
    (if (local.get $q)
      (then (call $die (global.get $MSG_TRUNCATED) (i32.const 1))))
    (call $flush (local.get $o)))

  ;; ---- entry point ----

  (func (export "_start")
    (local $argc i32)
    (local $decode i32)
    (if (call $args_sizes_get (i32.const 16) (i32.const 20))
      (then (call $die (global.get $MSG_USAGE) (i32.const 2))))
    (local.set $argc (i32.load (i32.const 16)))
    (if (i32.gt_u (local.get $argc) (i32.const 2))
      (then (call $die (global.get $MSG_USAGE) (i32.const 2))))
    (if (i32.eq (local.get $argc) (i32.const 2))
      (then
        ;; both argv strings must fit the argv buffer, NULs included
        (if (i32.gt_u (i32.load (i32.const 20)) (global.get $ARGV_BUF_SIZE))
          (then (call $die (global.get $MSG_USAGE) (i32.const 2))))
        (if (call $args_get (global.get $ARGV) (global.get $ARGV_BUF))
          (then (call $die (global.get $MSG_USAGE) (i32.const 2))))
        (local.set $decode (i32.or
          (call $streq (i32.load (i32.add (global.get $ARGV) (i32.const 4))) (global.get $OPT_D))
          (call $streq (i32.load (i32.add (global.get $ARGV) (i32.const 4))) (global.get $OPT_DECODE))))
        (if (i32.eqz (local.get $decode))
          (then (call $die (global.get $MSG_USAGE) (i32.const 2))))))
    (call $init_decode_table)
    (if (local.get $decode)
      (then (call $decode))
      (else (call $encode))))
)
