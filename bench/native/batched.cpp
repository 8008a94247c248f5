// llamaref-batched: llama.cpp's continuous-batching decode on its C API, the reference for
// `deno task bench batch`. For each N in --seqs, N sequences each get their own --prompt tokens
// (one llama_decode for all of them, untimed), then --tg steps each decode one token of every
// sequence in a single llama_decode (N rows, logits for all), feeding back each row's argmax.
// Prints one JSON object: decode tokens/s (N × tg / time) per N, one entry per rep.
//   llamaref-batched --model M.gguf [--threads 2] [--seqs 1,16] [--prompt 32] [--tg 32]
//                    [--reps 1] [--kv-type f32|f16] [--kv-unified 0|1] [--backend-dir DIR]
// Like llamaref-bench (../shared/llamaref/native/bench.cpp): CPU only, flash attention off, f32 KV
// by default, the best CPU variant node-llama-cpp's prebuilt libraries offer for the machine.
#include "llama.h"
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}
static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char ** argv) {
    std::string model_path, backend_dir, kv = "f32", seqs_arg = "1,16";
    int threads = 2, prompt_len = 32, tg = 32, reps = 1, unified = -1;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() { if (i + 1 >= argc) { fprintf(stderr, "missing value for %s\n", a.c_str()); exit(2); } return std::string(argv[++i]); };
        if (a == "--model") model_path = next();
        else if (a == "--threads") threads = atoi(next().c_str());
        else if (a == "--seqs") seqs_arg = next();
        else if (a == "--prompt") prompt_len = atoi(next().c_str());
        else if (a == "--tg") tg = atoi(next().c_str());
        else if (a == "--reps") reps = atoi(next().c_str());
        else if (a == "--kv-type") kv = next();
        else if (a == "--kv-unified") unified = atoi(next().c_str());
        else if (a == "--backend-dir") backend_dir = next();
        else { fprintf(stderr, "unknown flag %s\n", a.c_str()); return 2; }
    }
    if (model_path.empty()) { fprintf(stderr, "--model is required\n"); return 2; }
    std::vector<int> seqs;
    for (size_t p = 0; p < seqs_arg.size();) {
        size_t q = seqs_arg.find(',', p);
        if (q == std::string::npos) q = seqs_arg.size();
        int n = atoi(seqs_arg.substr(p, q - p).c_str());
        if (n < 1) { fprintf(stderr, "bad --seqs %s\n", seqs_arg.c_str()); return 2; }
        seqs.push_back(n);
        p = q + 1;
    }
    if (prompt_len < 1 || tg < 1 || reps < 1) { fprintf(stderr, "--prompt, --tg and --reps must be >= 1\n"); return 2; }
    llama_log_set(quiet, nullptr);
    if (backend_dir.empty()) {
        char exe[PATH_MAX] = {0};
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        std::string d = n > 0 ? std::string(exe, n) : std::string(".");
        d = d.substr(0, d.find_last_of('/'));
        backend_dir = d + "/../../node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
    }
    ggml_backend_load_all_from_path(backend_dir.c_str());
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "failed to load %s\n", model_path.c_str()); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_token bos = llama_vocab_bos(vocab);

    std::string out = "{\"source\":\"llama.cpp C API\",\"threads\":" + std::to_string(threads) +
        ",\"prompt\":" + std::to_string(prompt_len) + ",\"tg\":" + std::to_string(tg) + ",\"runs\":{";
    bool unified_used = false;
    for (size_t si = 0; si < seqs.size(); si++) {
        const int N = seqs[si];
        llama_context_params cp = llama_context_default_params();
        cp.n_seq_max = (uint32_t) N;
        cp.n_ctx = (uint32_t) (N * (prompt_len + tg + 16));
        cp.n_batch = cp.n_ubatch = (uint32_t) (N * prompt_len);
        cp.n_threads = cp.n_threads_batch = threads;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.no_perf = true;
        if (unified >= 0) cp.kv_unified = unified != 0;
        unified_used = cp.kv_unified;
        if (kv == "f32") { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) { fprintf(stderr, "failed to create a context for %d sequences\n", N); return 1; }
        llama_memory_t mem = llama_get_memory(ctx);
        llama_batch batch = llama_batch_init(N * prompt_len, 0, 1);
        std::vector<llama_token> last(N);

        // Every sequence's prompt in one decode; BOS then pseudo-random ids, different per sequence.
        auto prefill = [&]() {
            llama_memory_clear(mem, true);
            batch.n_tokens = 0;
            for (int s = 0; s < N; s++) {
                unsigned x = 12345u + 7919u * (unsigned) s;
                for (int p = 0; p < prompt_len; p++) {
                    x = x * 1103515245u + 12345u;
                    const int i = batch.n_tokens++;
                    batch.token[i] = p == 0 ? (bos < 0 ? 0 : bos) : 3 + (int) ((x >> 8) % (unsigned) std::max(1, n_vocab - 3));
                    batch.pos[i] = p;
                    batch.n_seq_id[i] = 1;
                    batch.seq_id[i][0] = s;
                    batch.logits[i] = p == prompt_len - 1;
                }
            }
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "prefill decode failed\n"); exit(1); }
            for (int s = 0; s < N; s++) {
                const float * l = llama_get_logits_ith(ctx, (s + 1) * prompt_len - 1);
                int best = 0;
                for (int v = 1; v < n_vocab; v++) if (l[v] > l[best]) best = v;
                last[s] = best;
            }
        };
        // `steps` decodes of N rows each; tokens/s over all rows.
        auto decode = [&](int steps) {
            double t0 = now();
            for (int k = 0; k < steps; k++) {
                batch.n_tokens = N;
                for (int s = 0; s < N; s++) {
                    batch.token[s] = last[s];
                    batch.pos[s] = prompt_len + k;
                    batch.n_seq_id[s] = 1;
                    batch.seq_id[s][0] = s;
                    batch.logits[s] = 1;
                }
                if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed\n"); exit(1); }
                for (int s = 0; s < N; s++) {
                    const float * l = llama_get_logits_ith(ctx, s);
                    int best = 0;
                    for (int v = 1; v < n_vocab; v++) if (l[v] > l[best]) best = v;
                    last[s] = best;
                }
            }
            return (double) N * steps / (now() - t0);
        };
        prefill();
        decode(4); // warm-up
        out += std::string(si ? "," : "") + "\"" + std::to_string(N) + "\":[";
        for (int r = 0; r < reps; r++) {
            prefill();
            char b[32];
            snprintf(b, sizeof b, "%s%.2f", r ? "," : "", decode(tg));
            out += b;
        }
        out += "]";
        llama_batch_free(batch);
        llama_free(ctx);
    }
    out += std::string("},\"kv_unified\":") + (unified_used ? "true" : "false") + "}";
    puts(out.c_str());
    llama_model_free(model);
    return 0;
}
