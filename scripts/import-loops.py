"""Import loops between the files of a Rust crate's src/.

A file imports another when it names an item through `crate::`, `super::`
or a child module (`producer::run`); names re-exported by a `pub use` are
followed to the file that defines them. Prints each loop of two files that
import each other, and exits 1 when any loop is not in ALLOWED.

    python3 scripts/import-loops.py crates/offload/src
"""
import os
import re
import sys

# A job's `run` takes its context; the context runs a job's blocking work.
ALLOWED = {("context.rs", "job.rs")}

src = sys.argv[1]
files={}
for root,d,fs in os.walk(src):
    for f in fs:
        if f.endswith('.rs'):
            p=os.path.relpath(os.path.join(root,f),src)
            parts=p[:-3].split('/')
            if parts[-1] in ('mod','lib'): parts=parts[:-1]
            files[tuple(parts)]=p
reexp={}
def parse_reexports():
    for mod,p in files.items():
        code='\n'.join(l.split('//')[0] for l in open(os.path.join(src,p)).read().split('\n'))
        for m in re.finditer(r'pub(?:\(crate\))? use ((?:crate|super|self)?(?:::)?[a-z_:]*?)::?\{([^}]*)\}',code,re.S):
            base=m.group(1); names=[x.strip().split('::')[-1] for x in m.group(2).split(',') if x.strip()]
            for n in names: reexp[(mod,n)]=(base,p)
        for m in re.finditer(r'pub(?:\(crate\))? use ([a-z_:]+)::([A-Za-z_0-9]+);',code):
            reexp[(mod,m.group(2))]=(m.group(1),p)
def basepath(mod,base):
    segs=base.split('::')
    out=list(mod)
    if segs[0]=='crate': out=[]; segs=segs[1:]
    while segs and segs[0]=='super': out=out[:-1]; segs=segs[1:]
    if segs and segs[0]=='self': segs=segs[1:]
    return out+[x for x in segs if x]
def resolve(modpath, segs, depth=0):
    for n in range(len(segs),-1,-1):
        cand=tuple(segs[:n])
        if cand in files:
            if n<len(segs) and (cand,segs[n]) in reexp and depth<5:
                base,_=reexp[(cand,segs[n])]
                return resolve(None, basepath(cand,base)+segs[n:], depth+1) or files[cand]
            return files[cand]
    return None
parse_reexports()
edges={}
for mod,p in files.items():
    text=open(os.path.join(src,p)).read()
    # drop comments
    code='\n'.join(l.split('//')[0] for l in text.split('\n'))
    # expand use groups roughly: capture paths
    for m in re.finditer(r'\b(crate|super(?:::super)*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)',code):
        head=m.group(1); tail=[s for s in m.group(2).split('::') if s]
        if head=='crate': base=[]
        else:
            ups=head.count('super')
            # current module path: for mod.rs files, module is the dir
            base=list(mod)[:len(mod)-ups] if ups<=len(mod) else []
        segs=base+tail
        # also handle `use super::{a, b}` groups
        t=resolve(None,segs)
        if t and t!=p: edges.setdefault(p,set()).add(t)
    for m in re.finditer(r'\b(crate|super(?:::super)*)::\{([^}]*)\}',code):
        head=m.group(1)
        base=[] if head=='crate' else list(mod)[:len(mod)-head.count('super')]
        for item in m.group(2).split(','):
            item=item.strip().split('::')
            if item and item[0]:
                t=resolve(None,base+[x for x in item if x and x!='self' and '{' not in x])
                if t and t!=p: edges.setdefault(p,set()).add(t)
for mod,p in files.items():
    text=open(os.path.join(src,p)).read()
    code='\n'.join(l.split('//')[0] for l in text.split('\n'))
    children=re.findall(r'^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_]+)\s*;',code,re.M)
    for c in children:
        if re.search(r'(?<![:\w])%s::'%c, code):
            t=files.get(tuple(list(mod)+[c]))
            if t: edges.setdefault(p,set()).add(t)
loops=sorted({tuple(sorted((a,b))) for a in edges for b in edges[a] if a in edges.get(b,())})
unexpected = [pair for pair in loops if pair not in ALLOWED]
for pair in loops:
    print(" <-> ".join(pair), "(allowed)" if pair in ALLOWED else "")
print(f"{len(loops)} import loops in {src}, {len(unexpected)} not allowed")
sys.exit(1 if unexpected else 0)
