import struct, os
C='corpus'
for t in ['abi_codec','request_ring','pcap_reader','vhost_user']:
    os.makedirs(f'{C}/{t}', exist_ok=True)
def w(t,name,b): open(f'{C}/{t}/{name}','wb').write(b)

def hdr(op, aux=0, key=0, params=b''):
    return struct.pack('<HHIQII', op, 0, key, 0x1122334455667788, aux, 0) + params.ljust(40, b'\0')
# abi_codec
w('abi_codec','header-csum', hdr(1, aux=0xffff))
w('abi_codec','config', struct.pack('<8I', 0x43414b50, 1, 2, 64, 1<<20, 0x3ff, 16, 0))
w('abi_codec','status', struct.pack('<IIQ', 5, 0, 0))

# ring layout shared by request_ring and vhost_user images
HDR, DATA, OUT, ST, IND = 0x800, 0x900, 0xa00, 0xb00, 0xb80
def desc(addr, ln, flags, nxt): return struct.pack('<QIHH', addr, ln, flags, nxt)
NEXT, WRITE, INDIRECT = 1, 2, 4
def image(descs, heads, header, data=b'\x45'*64, avail_idx=None, ind=b''):
    m = bytearray(0xc00)
    for i, d in enumerate(descs): m[i*16:i*16+16] = d
    idx = len(heads) if avail_idx is None else avail_idx
    m[0x400:0x404] = struct.pack('<HH', 0, idx)
    for i, h in enumerate(heads): m[0x404+2*i:0x406+2*i] = struct.pack('<H', h)
    m[HDR:HDR+64] = header
    m[DATA:DATA+len(data)] = data
    m[IND:IND+len(ind)] = ind
    return bytes(m)
simple = [desc(HDR,64,NEXT,1), desc(DATA,64,NEXT,2), desc(ST,16,WRITE,0)]
copy = [desc(HDR,64,NEXT,1), desc(DATA,64,NEXT,2), desc(OUT,64,WRITE|NEXT,3), desc(ST,16,WRITE,0)]
ind_tbl = desc(HDR,64,NEXT,1)+desc(DATA,64,NEXT,2)+desc(ST,16,WRITE,0)
indirect = [desc(IND,48,INDIRECT,0)]
size8 = 3
rr = {
 'csum': (0x00|size8, 0, image(simple, [0], hdr(1))),
 'crc32c-evidx': (0x10|size8, 0, image(simple, [0], hdr(2, aux=7))),
 'copy': (size8, 0, image(copy, [0], hdr(7))),
 'rss': (size8, 0, image(simple, [0], hdr(4, params=bytes(range(40))))),
 'indirect': (size8, 0, image(indirect, [0], hdr(1), ind=ind_tbl)),
 'two-heads': (size8, 0, image(copy+[], [0,0], hdr(7))),
 'copy-raced': (0x20|size8, 8, image(copy, [0], hdr(7))),
}
for n,(f,m,img) in rr.items():
    w('request_ring', n, bytes([f, m]) + img)

# pcap: Ethernet + IPv4 + UDP frame
def ipv4_udp(payload=b'x'*32):
    udp = struct.pack('>HHHH', 1234, 4321, 8+len(payload), 0) + payload
    ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20+len(udp), 0, 0, 64, 17, 0, bytes([10,0,0,1]), bytes([10,0,0,2]))
    return b'\x02'*6 + b'\x04'*6 + b'\x08\x00' + ip + udp
fr = ipv4_udp()
gh = struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)
rec = struct.pack('<IIII', 0, 0, len(fr), len(fr)) + fr
w('pcap_reader','udp-le', gh + rec + rec)
ghb = struct.pack('>IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)
w('pcap_reader','udp-be-nsec', struct.pack('>IHHiIII', 0xa1b23c4d, 2, 4, 0, 0, 65535, 1) + struct.pack('>IIII',0,0,len(fr),len(fr)) + fr)
w('pcap_reader','truncated', gh + rec[:30])

# vhost_user: a full negotiation then a kick
def msg(req, payload=b'', flags=1): return struct.pack('<III', req, flags, len(payload)) + payload
UA = 0x7000_0000_0000
feat = (1<<32)|(1<<30)|(1<<28)|0x3ff
def negotiation(features, vring_num=8, enable=True):
    m  = msg(1) + msg(2, struct.pack('<Q', features)) + msg(15) + msg(16, struct.pack('<Q', 0x201)) + msg(3)
    m += msg(17)
    m += msg(5, struct.pack('<II', 1, 0) + struct.pack('<QQQQ', 0, 0x10000, UA, 0))
    m += msg(8, struct.pack('<II', 0, vring_num))
    m += msg(9, struct.pack('<IIQQQQ', 0, 0, UA, UA+0x600, UA+0x400, 0))
    m += msg(10, struct.pack('<II', 0, 0))
    m += msg(13, struct.pack('<Q', 0)) + msg(12, struct.pack('<Q', 0))
    if enable: m += msg(18, struct.pack('<II', 0, 1))
    return m
img = image(copy, [0], hdr(7))
def vu(m, img): return struct.pack('<H', len(img)) + m + img
w('vhost_user','negotiate-copy', vu(negotiation(feat), img))
w('vhost_user','negotiate-csum-evidx', vu(negotiation(feat|(1<<29)), image(simple,[0],hdr(1))))
w('vhost_user','config', vu(msg(1)+msg(15)+msg(16,struct.pack('<Q',0x201))+msg(24, struct.pack('<III',0,32,0)+b'\0'*32)+msg(25, struct.pack('<III',0,4,0)+b'abcd'), b''))
w('vhost_user','stop-ring', vu(negotiation(feat) + msg(11, struct.pack('<II',0,0)) + msg(4), img))
