#!/usr/bin/env python3
"""How fast can FiLM's reasoning part learn when perception is perfect? (research tool)

Trains the PyTorch reference FiLM (`small`: GRU 256, 4 blocks of 64 channels, classifier 256;
the same architecture as film-rs's `mini` preset) not on pixels but on the ground-truth scene
rasterised to the stem's 8x8 grid: each cell holds, for the objects centred there
(`pixel_coords`), objectness, one-hot colour / shape / material / size and depth. Perception is
perfect; what is left is the question-to-reasoning path. Time-boxed; prints one JSON line per
evaluation (validation accuracy against questions seen) and, at the end, the accuracy per
question type and relate-hop count (`query_attribute/h0`: no relation, `h2`: two or more).

Needs PyTorch and the reference model `torch_film.py` (the shared research folder's
reference/; pass its folder with --reference). Derived from the shared folder's
ceiling_probe.py, with the flags below added. Results and commands: docs/results.md.

Usage: python3 research/proxy_probe.py DATA_DIR MINUTES [flags]   (DATA_DIR: CLEVR layout)
  --train-questions FILE  train on another question file about the same train scenes
  --curriculum-steps N    the first N steps draw batches from the easiest questions, a pool
                          growing from the easiest 20% to all; --difficulty length | objects |
                          both (object count + program length, each scaled to 0..1)
  --attend W              auxiliary loss on the last block: a 1x1 head predicts, per cell,
                          whether an object the answer depends on is centred there
  --attend-blocks         the same head on every block (block k: the program's object set k/4
                          of the way through its set-valued stages)
  --program-aux W         a head on the GRU's last state predicts every program token
  --oracle-program        the question is replaced by its program's tokens
  --bow                   the GRU's last state plus a projection of the mean word embedding
  --global-context max|mean  each block's input projection also sees the previous output's
                          global pool, broadcast to every cell
  --directional all|late   each block (late: each block after the first, so on a FiLMed
                          input) also sees, per cell, its input's maximum over the cells left
                          of it, right of it, above and below it: a relation in one step
  --directional-init zero  the 1x1 projection's weights on those maps start at zero
  --directional-source branch  (with late) the maps of the previous block's FiLMed branch
                          alone, without its residual: what the question picked out
  --directional-detach    no gradient flows back through the maps
  --directional-gate      the maps enter the block's 3x3 branch only (its residual stays
                          free of them), each scaled by a question-given weight that starts
                          at zero
  --film-pos norm|input|both  FiLM after the BatchNorm (the paper), on the block's input, or both
  --blocks K, --channels C, --hidden H, --lr, --warmup, --batch
  --pool max|mean|attn|max-attn|max-mean|max-tanh  the classifier's pool over the cells:
                          attn is a softmax over the cells per head (--pool-heads, each pooling
                          its share of the channels) from a 1x1 score of the classifier's
                          features; max-attn gives the classifier both; max-mean each channel's
                          maximum and mean; max-tanh its maximum and the mean of its tanh, so
                          that each cell where it fires adds about the same (a count)
  --skip proj|input        the residual adds the block's projected input r (the paper) or its
                          input x itself
  --stage KIND[,KIND]:Q[+KIND[,KIND]:Q...]
                          train only on these kinds for the first Q questions, then on the
                          next stage's kinds for its Q questions, and so on; then on all
  --only KIND[,KIND]      train only on these kinds (e.g. query_attribute/h0); the periodic
                          validation figure is then on those kinds too
  --word-attention add|replace  each block's FiLM parameters also come from (add) or only
                          from (replace) its own attention over the GRU's state at every word;
                          block k's query reads the GRU's last state and block k-1's attended
                          context (as multi-hop FiLM and MAC's control unit do)
  --prioritize P          after the stages and curriculum, draw each batch's questions by
                          kind (as the final report splits them) with probability
                          proportional to the kind's share of the questions times its
                          training error to the power P (a running average over recent
                          batches, starting at 1), instead of epochs of plain shuffles
  --dilation D1,D2,...     block k's 3x3 convolution reads cells Dk apart (padding Dk), so
                          that two blocks see further across the 8x8 grid: 1,3 reach four
                          cells either way instead of two
  --intermediate W       two auxiliary heads on the classifier's hidden layer predict the
                          program's intermediate answers (weight W): the two attributes an
                          attribute comparison compares, the two counts a number comparison
                          or a count of a union/intersection reads, the count behind an
                          exist, and the attribute a 'same as' step copies from its
                          reference object; questions without one are not supervised
  --threads T, --seed S
"""
import argparse, json, re, sys, time, os
import torch, torch.nn as nn, torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument('data'); ap.add_argument('minutes', type=float)
ap.add_argument('--batch', type=int, default=64); ap.add_argument('--lr', type=float, default=1e-3)
ap.add_argument('--warmup', type=int, default=0); ap.add_argument('--train-questions')
ap.add_argument('--curriculum', action='store_true'); ap.add_argument('--attend', type=float, default=0.0)
ap.add_argument('--pool', default='max'); ap.add_argument('--pool-heads', type=int, default=4); ap.add_argument('--attend-blocks', action='store_true')
ap.add_argument('--eval-every', type=int, default=1000)
ap.add_argument('--channels', type=int, default=64); ap.add_argument('--hidden', type=int, default=256)
ap.add_argument('--curriculum-steps', type=int, default=0)
ap.add_argument('--difficulty', default='length')  # length | objects | both
ap.add_argument('--program-aux', type=float, default=0.0)
ap.add_argument('--oracle-program', action='store_true')
ap.add_argument('--blocks', type=int, default=4)
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--global-context', default='')  # '', max, mean: each block also sees the previous output's global pool
ap.add_argument('--bow', action='store_true')
ap.add_argument('--directional-init', default='default')  # default | zero: the input projection's weights on the half-plane maps
ap.add_argument('--directional-source', default='input')  # input | branch: the maps of the block's input, or of the previous block's FiLMed branch alone (late only)
ap.add_argument('--directional-gate', action='store_true')  # the maps enter the 3x3 branch only, scaled per channel by the question (zero at the start)
ap.add_argument('--directional-detach', action='store_true')  # no gradient through the maps into the earlier block
ap.add_argument('--directional', default='')  # '', all, late: blocks also see their input's max over each half-plane (left, right, above, below)
ap.add_argument('--film-pos', default='norm')  # norm (the paper) | input | both
ap.add_argument('--only', default='')
ap.add_argument('--stage', default='')  # KIND[,KIND]:QUESTIONS[+KIND[,KIND]:QUESTIONS...]: stages of only these kinds, in order, then all
ap.add_argument('--skip', default='proj')  # proj (the paper: + r) | input (+ the block's input x) | none
ap.add_argument('--film-classifier', action='store_true')  # FiLM also on the classifier's 1x1 projection, before the pool
ap.add_argument('--last-skip', default='')  # the last block's residual, if not --skip's
ap.add_argument('--prioritize', type=float, default=0.0)
ap.add_argument('--word-attention', default='')  # '', add, replace
ap.add_argument('--intermediate', type=float, default=0.0)
ap.add_argument('--dilation', default='')  # D1,D2,...: each block's 3x3 convolution reads cells D apart (1: the paper's)
ap.add_argument('--reference', required=True, help='folder holding the PyTorch reference torch_film.py')
a = ap.parse_args()
if a.word_attention and a.film_pos == 'both':
    ap.error('--word-attention gives one (gamma, beta) per block; --film-pos both needs two')
if a.directional_source == 'branch' and a.directional != 'late':
    ap.error('--directional-source branch needs --directional late: the first block has no previous branch')
if (a.directional_gate or a.directional_detach or a.directional_init != 'default' or a.directional_source != 'input') and not a.directional:
    ap.error('the --directional-* flags modify --directional all|late, which is not given')
sys.path.insert(0, a.reference)
import torch_film as tf
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
data, minutes, B = a.data, a.minutes, a.batch
COLORS = ['gray', 'red', 'blue', 'green', 'brown', 'purple', 'cyan', 'yellow']
SHAPES = ['cube', 'sphere', 'cylinder']; MATS = ['rubber', 'metal']; SIZES = ['large', 'small']
G = 8

def maps(split):
    sc = json.load(open(f'{data}/scenes/CLEVR_{split}_scenes.json'))['scenes']
    out = torch.zeros(len(sc), 17, G, G)
    for s in sc:
        for o in s['objects']:
            x, y, d = o['pixel_coords']
            cx, cy = min(G - 1, int(x / 480 * G)), min(G - 1, int(y / 320 * G))
            v = out[s['image_index'], :, cy, cx]
            v[0] += 1; v[1 + COLORS.index(o['color'])] += 1; v[9 + SHAPES.index(o['shape'])] += 1
            v[12 + MATS.index(o['material'])] += 1; v[14 + SIZES.index(o['size'])] += 1; v[16] += d / 15
    return out

def cell(o):
    x, y, _ = o['pixel_coords']
    return min(G - 1, int(y / 320 * G)) * G + min(G - 1, int(x / 480 * G))

def execute(prog, scene):
    """CLEVR program semantics; returns each node's output (a set of object indices, an int, a str, a bool)."""
    objs, rel, out = scene['objects'], scene['relationships'], []
    for n in prog:
        f, ins, v = n['function'], [out[i] for i in n['inputs']], n.get('value_inputs', [])
        if f == 'scene': r = set(range(len(objs)))
        elif f.startswith('filter_'): r = {i for i in ins[0] if objs[i][f[7:]] == v[0]}
        elif f == 'unique': r = set(ins[0])
        elif f == 'relate': r = set(rel[v[0]][next(iter(ins[0]))])
        elif f == 'union': r = ins[0] | ins[1]
        elif f == 'intersect': r = ins[0] & ins[1]
        elif f.startswith('same_'):
            a = next(iter(ins[0])); k = f[5:]
            r = {i for i in range(len(objs)) if i != a and objs[i][k] == objs[a][k]}
        else: r = None  # count / exist / query / compare: a value
        out.append(r)
    return out

def relevant(prog, outs, i):
    if outs[i] is not None: return outs[i]
    r = set()
    for j in prog[i]['inputs']: r |= relevant(prog, outs, j)
    return r

def intermediate_answers(prog, outs, objs):
    """The (A, B) intermediate answers --intermediate supervises, as answer strings or None."""
    def value(i):
        f, ins = prog[i]['function'], prog[i]['inputs']
        if f.startswith('query_'): return objs[next(iter(outs[ins[0]]))][f[6:]]
        if f == 'count': return str(len(outs[ins[0]]))
        return None
    f, ins = prog[-1]['function'], prog[-1]['inputs']
    slots = []
    if f.startswith('equal_') or f in ('less_than', 'greater_than'):
        slots = [value(ins[0]), value(ins[1])]
    elif f == 'exist':
        slots = [str(len(outs[ins[0]]))]
    elif f == 'count' and prog[ins[0]]['function'] in ('union', 'intersect'):
        slots = [str(len(outs[j])) for j in prog[ins[0]]['inputs']]
    for n in prog:
        if n['function'].startswith('same_') and len(slots) < 2:
            slots.append(objs[next(iter(outs[n['inputs'][0]]))][n['function'][5:]])
    slots += [None] * (2 - len(slots))
    return slots[:2]

def intermediate_targets(split, qs, answers):
    sc = json.load(open(f'{data}/scenes/CLEVR_{split}_scenes.json'))['scenes']
    t = torch.full((len(qs), 2), -100, dtype=torch.long)
    for k, q in enumerate(qs):
        objs = sc[q['image_index']]['objects']; prog = q['program']
        for j, v in enumerate(intermediate_answers(prog, execute(prog, sc[q['image_index']]), objs)):
            if v is not None and v in answers: t[k, j] = answers[v]
    return t

def attend_maps(split, qs):
    sc = json.load(open(f'{data}/scenes/CLEVR_{split}_scenes.json'))['scenes']
    nb = 4 if a.attend_blocks else 1
    m = torch.zeros(len(qs), nb, G * G)
    for k, q in enumerate(qs):
        s = sc[q['image_index']]; prog = q['program']; outs = execute(prog, s)
        stages = [outs[i] for i in range(1, len(prog)) if outs[i] is not None]
        for b in range(nb):
            objs = relevant(prog, outs, len(prog) - 1) if b == nb - 1 or not stages \
                else stages[min(len(stages) - 1, (b + 1) * len(stages) // nb - 1)]
            for o in objs:
                m[k, b, cell(s['objects'][o])] = 1
    return m.view(-1, nb, G, G)

def qtype(f):
    if f in ('exist', 'count'): return f
    if f in ('equal_integer', 'less_than', 'greater_than'): return 'compare_number'
    return 'query_attribute' if f.startswith('query_') else 'compare_attribute'

def ptokens(q):
    return [n['function'] + ('[' + ','.join(n.get('value_inputs', [])) + ']' if n.get('value_inputs') else '') for n in q['program']]
def words(q):
    if isinstance(q, dict):
        return ptokens(q) if a.oracle_program else re.findall(r"[A-Za-z]+|[;,]", q['question'])
    return re.findall(r"[A-Za-z]+|[;,]", q)

def load(split, vocab=None, answers=None, path=None):
    qs = json.load(open(path or f'{data}/questions/CLEVR_{split}_questions.json'))['questions']
    if vocab is None:
        vocab = {w: i + 1 for i, w in enumerate(sorted({w for q in qs for w in words(q)}))}
        answers = {a: i for i, a in enumerate(sorted({q['answer'] for q in qs}))}
    T = max(len(words(q)) for q in qs)
    toks = torch.zeros(len(qs), T, dtype=torch.long); lens = torch.zeros(len(qs), dtype=torch.long)
    for i, q in enumerate(qs):
        w = [vocab.get(x, 0) for x in words(q)]
        toks[i, :len(w)] = torch.tensor(w); lens[i] = len(w)
    ans = torch.tensor([answers.get(q['answer'], -1) for q in qs])
    img = torch.tensor([q['image_index'] for q in qs])
    sc = json.load(open(f'{data}/scenes/CLEVR_{split}_scenes.json'))['scenes']
    nobj = torch.tensor([len(sc[q['image_index']]['objects']) for q in qs], dtype=torch.float)
    plen = torch.tensor([len(q.get('program', [])) for q in qs], dtype=torch.float)
    if a.difficulty == 'length': fam = plen
    elif a.difficulty == 'objects': fam = nobj
    else: fam = (nobj - 3) / 7 + (plen - plen.min()) / (plen.max() - plen.min())
    PL = 32
    ptok = torch.full((len(qs), PL), -100, dtype=torch.long)
    for i, q in enumerate(qs):
        t = [PVOCAB.setdefault(x, len(PVOCAB)) for x in ptokens(q)][:PL]
        ptok[i, :len(t)] = torch.tensor(t)
    kind = [qtype(q['program'][-1]['function']) + '/h%d' % min(2, sum(n['function'] == 'relate' for n in q['program']))
            + ('/same' if any(n['function'].startswith('same_') for n in q['program']) else '') for q in qs]
    att = attend_maps(split, qs) if a.attend and split == 'train' else None
    inter = intermediate_targets(split, qs, answers) if a.intermediate and split == 'train' else None
    return toks, lens, ans, img, fam, vocab, answers, att, kind, ptok, inter

PVOCAB = {}
tr0 = load('train')
if a.train_questions:  # vocabulary from the union so that no training word is unknown
    big = json.load(open(a.train_questions))['questions']
    allw = {w for q in big for w in words(q)} | set(tr0[5])
    allw = allw | {w for q in big for w in words(q)}
    vocab = {w: i + 1 for i, w in enumerate(sorted(allw))}
    answers = {x: i for i, x in enumerate(sorted({q['answer'] for q in big} | set(tr0[6])))}
    tr = load('train', vocab, answers, a.train_questions)
else:
    tr = tr0
va = load('val', tr[5], tr[6])
def subset(t, keep):
    ix = torch.tensor([i for i, k in enumerate(t[8]) if k in keep])
    return tuple(x[ix] if torch.is_tensor(x) else ([x[i] for i in ix.tolist()] if isinstance(x, list) else x) for x in t)
if a.only:
    tr = subset(tr, a.only.split(','))
print(json.dumps(dict(train_questions=len(tr[0]), val_questions=len(va[0]), vocab=len(tr[5]), batch=B,
                      lr=a.lr, warmup=a.warmup, curriculum=a.curriculum,
                      attend=a.attend, attend_blocks=a.attend_blocks, pool=a.pool, channels=a.channels,
                      hidden=a.hidden, curriculum_steps=a.curriculum_steps, difficulty=a.difficulty, program_aux=a.program_aux, oracle=a.oracle_program, blocks=a.blocks, global_context=a.global_context, directional=a.directional, directional_init=a.directional_init, directional_source=a.directional_source, directional_gate=a.directional_gate, directional_detach=a.directional_detach, bow=a.bow, film_pos=a.film_pos, only=a.only, skip=a.skip, last_skip=a.last_skip, film_classifier=a.film_classifier, word_attention=a.word_attention, prioritize=a.prioritize, dilation=a.dilation, intermediate=a.intermediate, seed=a.seed, pvocab=len(PVOCAB))), flush=True)
mtr, mva = maps('train'), maps('val')
tf.VOCAB = len(tr[5]) + 1; tf.NUM_ANSWERS = len(tr[6])
cfg = dict(tf.CONFIGS['small']); cfg.update(inp=(17, G, G), stem='feat', C=a.channels, H=a.hidden)
tf.NUM_MODULES = a.blocks

def half_planes(x):
    """Per cell, each channel's maximum over the cells strictly left of it, right of it, above and
    below it (whole columns or rows); x >= 0, so the zero past the edge is neutral."""
    def before_after(v):  # v: N, C, L -> max over indices < l, max over indices > l
        before = F.pad(v.cummax(-1).values[..., :-1], (1, 0))
        after = F.pad(v.flip(-1).cummax(-1).values.flip(-1)[..., 1:], (0, 1))
        return before, after
    N, C, H, W = x.shape
    left, right = before_after(x.amax(2))
    above, below = before_after(x.amax(3))
    return (left[:, :, None, :].expand(N, C, H, W), right[:, :, None, :].expand(N, C, H, W),
            above[:, :, :, None].expand(N, C, H, W), below[:, :, :, None].expand(N, C, H, W))

class GBlock(tf.FiLMedResBlock):
    def __init__(self, C, i):
        super().__init__(C)
        self.skip = a.last_skip if (a.last_skip and i == a.blocks - 1) else a.skip
        if a.dilation:  # the same weights, read further apart, so the random stream is kept
            d = int(a.dilation.split(',')[i])
            self.conv.dilation, self.conv.padding = (d, d), (d, d)
        if a.global_context:
            self.input_proj = nn.Conv2d(2 * C + 2, C, kernel_size=1)
        self.directional = a.directional == 'all' or (a.directional == 'late' and i > 0)
        if self.directional and a.directional_gate:
            self.plane_proj = nn.Conv2d(4 * C, C, kernel_size=1)
        elif self.directional:
            self.input_proj = nn.Conv2d(5 * C + 2, C, kernel_size=1)
            if a.directional_init == 'zero':
                with torch.no_grad():
                    self.input_proj.weight[:, C:5 * C] = 0
    def forward(self, x, gamma, beta, coords):
        if a.film_pos != 'norm':
            C = x.size(1)
            gi, bi = gamma[:, -C:], beta[:, -C:]
            x = gi[:, :, None, None] * x + bi[:, :, None, None]
            gamma, beta = gamma[:, :C], beta[:, :C]
        if a.global_context:
            g = x.amax((2, 3), keepdim=True) if a.global_context == 'max' else x.mean((2, 3), keepdim=True)
            inp = torch.cat([x, g.expand_as(x), coords], 1)
        elif self.directional and not a.directional_gate:
            inp = torch.cat([x, *self.half_planes_of(x), coords], 1)
        else:
            inp = torch.cat([x, coords], 1)
        r = F.relu(self.input_proj(inp))
        if self.directional and a.directional_gate:
            planes = torch.cat(self.half_planes_of(x), 1) * self.gate[:, :, None, None]
            out = self.bn(self.conv(r + self.plane_proj(planes)))
        else:
            out = self.bn(self.conv(r))
        if a.film_pos != 'input':
            out = gamma[:, :, None, None] * out + beta[:, :, None, None]
        self.branch = F.relu(out)  # what the next block's --directional-source branch reads
        if self.skip == 'none': return self.branch
        return self.branch + (x if self.skip == 'input' else r)
    def half_planes_of(self, x):
        src = self.previous_branch if a.directional_source == 'branch' else x
        return half_planes(src.detach() if a.directional_detach else src)

class Probe(tf.FiLM):
    """The reference FiLM, with the last block's output also returned for the attention head."""
    def __init__(self, cfg):
        nn.Module.__init__(self)
        self.gen = tf.FiLMGen(cfg['D'], cfg['H'], cfg['C'] * (2 if a.film_pos == 'both' else 1), a.blocks)
        self.net = tf.FiLMedNet(cfg, a.blocks)
        self.net.blocks = nn.ModuleList(GBlock(cfg['C'], i) for i in range(a.blocks))
        self.paux = nn.Linear(cfg['H'], 32 * 64)
        self.bow = nn.Linear(cfg['D'], cfg['H'])
        if a.directional_gate:  # only when used, so that other runs keep their random stream
            self.gates = nn.ModuleList(nn.Linear(cfg['H'], 4 * cfg['C']) for _ in range(a.blocks))
            for g in self.gates:
                nn.init.zeros_(g.weight); nn.init.zeros_(g.bias)
        if a.word_attention:  # only when used, so that other runs keep their random stream
            H, C = cfg['H'], cfg['C']
            self.word_keys = nn.Linear(H, H)
            self.word_queries = nn.ModuleList(nn.Linear(2 * H, H) for _ in range(a.blocks))
            self.word_films = nn.ModuleList(nn.Linear(H, 2 * C) for _ in range(a.blocks))
        if a.film_classifier:  # only when used, so that other runs keep their random stream
            self.cls_film = nn.Linear(cfg['H'], 2 * cfg['P'])
        self.att = nn.ModuleList(nn.Conv2d(cfg['C'], 1, 1) for _ in range(a.blocks if a.attend_blocks else 1))
        if a.pool in ('max-mean', 'max-tanh'):  # only when used, so that other runs keep their random stream
            self.net.fc1 = nn.Linear(2 * cfg['P'], self.net.fc1.out_features)
        if a.intermediate:  # only when used, so that other runs keep their random stream
            self.intermediate = nn.ModuleList(nn.Linear(self.net.fc1.out_features, tf.NUM_ANSWERS) for _ in range(2))
        if 'attn' in a.pool:  # only when used, so that other runs keep their random stream
            self.pool_score = nn.Conv2d(cfg['P'], a.pool_heads, 1)
            if a.pool == 'max-attn':
                self.net.fc1 = nn.Linear(2 * cfg['P'], self.net.fc1.out_features)
    def word_attention(self, out, q_len, h_last, film):
        T = out.size(1)
        mask = torch.arange(T)[None, :] < q_len[:, None]
        keys = self.word_keys(out)
        context = torch.zeros_like(h_last); films = []
        for k in range(a.blocks):
            query = self.word_queries[k](torch.cat([h_last, context], 1))
            score = (keys * query[:, None, :]).sum(2) / keys.size(2) ** 0.5
            weight = torch.softmax(score.masked_fill(~mask, float('-inf')), 1)
            context = (weight[:, :, None] * out).sum(1)
            films.append(self.word_films[k](context))
        attended = torch.stack(films, 1)
        return film + attended if a.word_attention == 'add' else attended

    def forward(self, img, q, q_len, with_att=False):
        out, _ = self.gen.gru(self.gen.embed(q))
        idx = (q_len - 1).view(-1, 1, 1).expand(-1, 1, out.size(2))
        h_last = out.gather(1, idx).squeeze(1)
        if a.bow:
            e = self.gen.embed(q); m = (q > 0).float().unsqueeze(2)
            h_last = h_last + self.bow((e * m).sum(1) / m.sum(1).clamp(min=1))
        self.h_last = h_last
        film = self.gen.decoder(h_last).view(-1, self.gen.M, 2 * self.gen.C)
        if a.word_attention:
            film = self.word_attention(out, q_len, h_last, film)
        gammas = 1.0 + film[:, :, : self.gen.C]; betas = film[:, :, self.gen.C:]
        n = self.net
        x = n.stem(img)
        coords = tf.coord_map(x.size(2), x.size(3), x.device, x.dtype).expand(x.size(0), -1, -1, -1)
        maps = []
        for i, blk in enumerate(n.blocks):
            if i > 0:
                blk.previous_branch = n.blocks[i - 1].branch
            if blk.directional and a.directional_gate:
                blk.gate = self.gates[i](h_last)
            x = blk(x, gammas[:, i], betas[:, i], coords)
            if a.attend_blocks or i == len(n.blocks) - 1:
                maps.append(self.att[len(maps)](x))
        h = n.cls_bn(n.cls_proj(torch.cat([x, coords], 1)))
        if a.film_classifier:
            cf = self.cls_film(h_last); P = h.size(1)
            h = (1.0 + cf[:, :P, None, None]) * h + cf[:, P:, None, None]
        h = F.relu(h)
        if 'attn' in a.pool:
            # softmax over the cells per head; head k pools its share of the channels
            N, P = h.size(0), h.size(1)
            w = torch.softmax(self.pool_score(h).flatten(2), dim=2)  # N, heads, cells
            hh = h.flatten(2).view(N, a.pool_heads, P // a.pool_heads, -1)
            att = (hh * w.unsqueeze(2)).sum(3).reshape(N, P)
            h = torch.cat([torch.amax(h, dim=(2, 3)), att], 1) if a.pool == 'max-attn' else att
        elif a.pool == 'max-mean':
            h = torch.cat([torch.amax(h, dim=(2, 3)), h.mean(dim=(2, 3))], 1)
        elif a.pool == 'max-tanh':  # the mean of a saturated activation: each firing cell counts once
            h = torch.cat([torch.amax(h, dim=(2, 3)), torch.tanh(h).mean(dim=(2, 3))], 1)
        else:
            h = torch.amax(h, dim=(2, 3)) if a.pool == 'max' else h.mean(dim=(2, 3))
        self.hidden = F.relu(n.fc_bn(n.fc1(h)))
        logits = n.fc2(self.hidden)
        return (logits, torch.cat(maps, 1)) if with_att else logits

model = Probe(cfg)
opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=1e-5)

def evaluate(per_type=False):
    model.eval(); hit = []
    with torch.no_grad():
        for s in range(0, len(va[0]), 500):
            sl = slice(s, s + 500)
            out = model(mva[va[3][sl]], va[0][sl], va[1][sl].clamp(min=1))
            hit += (out.argmax(1) == va[2][sl]).tolist()
    model.train()
    if not per_type:
        if a.only:
            keep = a.only.split(',')
            h = [x for x, k in zip(hit, va[8]) if k in keep]
            return sum(h) / len(h)
        return sum(hit) / len(hit)
    kinds = sorted(set(va[8]))
    return {k: round(sum(h for h, t in zip(hit, va[8]) if t == k) / va[8].count(k), 4) for k in kinds}

start = time.time(); step = 0; seen = 0; N = len(tr[0]); epoch = 0; hits = 0; tot = 0
by_length = torch.argsort(tr[4], stable=True)

def curriculum_batches():
    for t in range(a.curriculum_steps):
        pool = max(10 * B, int(N * (0.2 + 0.8 * t / a.curriculum_steps)))
        yield by_length[torch.randint(0, pool, (B,))]
def stage_batches():
    if not a.stage: return
    for stage in a.stage.split('+'):
        kinds, count = stage.rsplit(':', 1); keep = set(kinds.split(','))
        pool = torch.tensor([i for i, k in enumerate(tr[8]) if k in keep])
        for _ in range(int(float(count)) // B):
            yield pool[torch.randint(0, len(pool), (B,))]
KINDS = sorted(set(tr[8]))
kind_of = torch.tensor([KINDS.index(k) for k in tr[8]])
kind_pools = [torch.nonzero(kind_of == j).squeeze(1) for j in range(len(KINDS))]
kind_share = torch.tensor([len(p) for p in kind_pools], dtype=torch.float) / N
kind_error = torch.ones(len(KINDS))
def prioritized_batches():
    while True:
        weights = kind_share * kind_error.clamp(min=0.02) ** a.prioritize
        kinds = torch.multinomial(weights / weights.sum(), B, replacement=True)
        yield torch.stack([kind_pools[j][torch.randint(0, len(kind_pools[j]), (1,))][0] for j in kinds.tolist()])
def epochs():
    global epoch
    yield from stage_batches()
    yield from curriculum_batches()
    if a.prioritize:
        yield from prioritized_batches()
    while True:
        perm = torch.randperm(N)
        if a.curriculum and epoch == 0:
            perm = perm[torch.argsort(tr[4][perm], stable=True)]
        epoch += 1
        for s in range(0, N - B + 1, B):
            yield perm[s:s + B]

for idx in epochs():
    if a.warmup:
        for g in opt.param_groups:
            g['lr'] = a.lr * min(1.0, (step + 1) / a.warmup)
    if a.attend:
        out, att = model(mtr[tr[3][idx]], tr[0][idx], tr[1][idx].clamp(min=1), with_att=True)
        loss = F.cross_entropy(out, tr[2][idx]) + a.attend * F.binary_cross_entropy_with_logits(att, tr[7][idx])
    else:
        out = model(mtr[tr[3][idx]], tr[0][idx], tr[1][idx].clamp(min=1))
        loss = F.cross_entropy(out, tr[2][idx])
    if a.program_aux:
        pl = model.paux(model.h_last).view(-1, 32, 64)
        loss = loss + a.program_aux * F.cross_entropy(pl.reshape(-1, 64), tr[9][idx].reshape(-1), ignore_index=-100)
    if a.intermediate:
        target = tr[10][idx]
        for j in range(2):
            if (target[:, j] >= 0).any():
                loss = loss + a.intermediate * F.cross_entropy(model.intermediate[j](model.hidden), target[:, j], ignore_index=-100)
    opt.zero_grad(); loss.backward(); opt.step()
    step += 1; seen += B
    correct = (out.argmax(1) == tr[2][idx])
    hits += correct.sum().item(); tot += B
    if a.prioritize:  # a running average of each kind's training error, over its recent questions
        k = kind_of[idx]
        for j in k.unique().tolist():
            m = k == j
            kind_error[j] = 0.99 ** m.sum().item() * kind_error[j] + (1 - 0.99 ** m.sum().item()) * (1 - correct[m].float().mean())
    if step % a.eval_every == 0:
        print(json.dumps(dict(step=step, questions=seen, epoch=epoch,
                              minutes=round((time.time() - start) / 60, 2),
                              loss=round(loss.item(), 3), train=round(hits / tot, 4),
                              val=round(evaluate(), 4))), flush=True)
        hits = tot = 0
    if time.time() - start > minutes * 60:
        break
print(json.dumps(dict(final=True, step=step, questions=seen, val=round(evaluate(), 4), **evaluate(True))))
