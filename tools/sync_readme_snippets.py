# Copies each README.md code block's region from its examples/ file (the inverse of the readme_snippets test):
# run after editing a region. python3 tools/sync_readme_snippets.py, from the repository root.
import re,sys
def region(path, name):
    lines=open(path).read().split('\n')
    i=[k for k,l in enumerate(lines) if l.strip()==f'// [readme:{name}]'][0]
    j=next(k for k in range(i+1,len(lines)) if lines[k].strip()=='// [readme:end]')
    r=lines[i+1:j]
    ind=min(len(l)-len(l.lstrip(' ')) for l in r if l.strip())
    return [l[ind:] if l.strip() else '' for l in r]
s=open('README.md').read()
def rep(m):
    return f'<!-- snippet: {m.group(1)}#{m.group(2)} -->\n```{m.group(3)}\n' + '\n'.join(region(m.group(1),m.group(2))) + '\n```'
s=re.sub(r'<!-- snippet: ([^#]+)#([\w.-]+) -->\n```(\w+)\n(?:(?!```)[^\n]*\n)*```', rep, s)
open('README.md','w').write(s)
