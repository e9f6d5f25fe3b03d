"""Traditional Chinese characters in hypotheses: find them, and convert them only when asked.

Multilingual Whisper models often answer Mandarin speech in traditional characters (這裡 for
这里), which a simplified reference scores as substitutions. The benchmark does not hide this:
:func:`traditional_report` counts hypothesis characters that are traditional-only forms of
common characters (a hand-made list of about 400 frequent ones, so the count is a lower bound),
and the report shows it next to the error rate. Conversion (:func:`to_simplified`) happens only
on request and needs the ``opencc`` package; without it a clear error says so.

    traditional_report({"u1": "這裡有兩種方法"})   # -> {"chars": 3, "cjk_chars": 7, ...}
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Mapping

from xasr.errors import XasrError

# (traditional, simplified) pairs, written as one string of pairs; only forms that simplified
# Chinese does not use (著, 乾, 於-like ambiguous ones used in simplified names are left out)
_PAIRS = (
    "這这個个們们來来時时說说國国會会學学對对後后還还為为經经現现發发過过與与開开問问種种見见關关長长樣样點点"
    "當当從从實实頭头間间動动體体進进機机麼么電电兩两麵面裡里裏里東东車车門门書书無无愛爱聽听話话讓让認认識识"
    "員员業业氣气義义應应題题將将變变親亲邊边師师報报場场處处論论線线達达區区總总條条風风飛飞馬马魚鱼鳥鸟龍龙"
    "歲岁歷历曆历憶忆隊队陽阳陰阴際际雲云雙双難难離离雜杂雞鸡靜静預预領领顏颜願愿類类顯显飯饭飲饮館馆驗验黨党"
    "齊齐齒齿龜龟萬万樂乐樹树橋桥權权歡欢殺杀漢汉灣湾熱热燈灯爭争爾尔牆墙狀状獨独獲获環环產产畫画療疗盡尽監监"
    "確确禮礼禪禅穩稳窮穷筆笔節节範范築筑簡简糧粮紀纪約约紅红紙纸級级細细終终組组結结給给統统絕绝綠绿維维網网"
    "緊紧練练縣县繼继續续罷罢習习聖圣聞闻聲声聯联職职肅肃腦脑腳脚興兴舊旧艦舰藝艺藥药蘇苏蘭兰號号蟲虫衛卫衝冲"
    "補补裝装製制複复規规視视覺觉觀观計计記记許许設设訪访證证評评詞词試试詩诗該该語语誤误課课誰谁調调談谈請请"
    "謝谢講讲譯译議议護护讀读豐丰貝贝負负財财貨货質质購购費费資资賣卖買买賽赛贊赞趕赶趙赵躍跃軍军輕轻載载較较"
    "輪轮輸输轉转辦办農农連连週周遊游運运違违遠远適适選选遺遗鄉乡醫医釋释針针鐘钟鐵铁銀银錢钱錯错鏡镜閉闭閱阅"
    "闊阔陸陆陳陈險险隨随隱隐雖虽須须頁页項项順顺頻频額额養养餘余驚惊髮发鬥斗鬧闹麗丽黃黄內内兒儿傳传傷伤價价"
    "億亿優优儀仪僅仅備备劃划劇剧勞劳勝胜勢势務务協协單单啟启喚唤嗎吗嚴严團团圍围圖图圓圆塊块壓压壞坏壯壮夢梦"
    "奮奋婦妇媽妈孫孙寫写寶宝審审專专尋寻導导層层屬属島岛嶺岭幣币幫帮幾几廣广庫库廳厅張张強强彈弹彎弯錄录徑径"
    "復复態态懷怀戰战戲戏擁拥據据擇择擊击擔担擴扩損损換换揮挥數数斷断於于晉晋曉晓極极構构標标檢检櫃柜歐欧歸归"
    "殘残決决沒没況况淚泪淨净滅灭滿满漁渔潔洁濟济濕湿濱滨灘滩災灾烏乌煙烟爺爷猶犹獎奖獻献瑪玛瓊琼畢毕異异瘋疯"
    "眾众睜睁礎础礙碍禍祸稱称積积穀谷窩窝競竞紐纽純纯紹绍綜综緒绪編编緣缘織织罰罚羅罗聰聪膽胆臉脸臺台舉举艱艰"
    "莊庄華华葉叶蓋盖蔣蒋薦荐藍蓝蘋苹蠻蛮術术褲裤襲袭覽览訂订訊讯訓训託托訴诉詢询誌志誕诞誠诚誡诫諾诺謀谋譽誉"
    "讚赞豬猪貓猫貞贞貢贡貧贫責责貴贵貸贷貿贸賀贺賴赖賺赚賞赏賓宾贏赢趨趋蹤踪輩辈辭辞邏逻郵邮鄰邻醜丑釣钓鈴铃"
    "銷销鋼钢錦锦鍵键鎮镇閃闪閒闲閣阁闆板闖闯陣阵階阶隻只霧雾靈灵韓韩響响頂顶頓顿頌颂顆颗顧顾颱台飄飘飽饱餅饼"
    "餓饿駕驾騎骑騙骗驅驱骯肮鬆松魯鲁鮮鲜鳳凤鴨鸭鵝鹅鹽盐麥麦黴霉齡龄龐庞槍枪攤摊團团嘆叹個个"
)

TRADITIONAL_TO_SIMPLIFIED: Dict[str, str] = {_PAIRS[i]: _PAIRS[i + 1] for i in range(0, len(_PAIRS), 2)}


def _is_han(ch: str) -> bool:
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3FFFF


def traditional_report(hyps: Mapping[str, str], examples: int = 10) -> Dict[str, object]:
    """Counts of traditional-only characters in hypothesis texts.

    Returns ``{"chars": n, "cjk_chars": m, "utterances": k, "examples": ["這->这", ...]}``:
    n traditional-only characters among the m Han characters, in k utterances; examples are
    the most frequent ones with their simplified forms.
    """
    found: Counter = Counter()
    han = 0
    utts = 0
    for text in hyps.values():
        here = [ch for ch in text if ch in TRADITIONAL_TO_SIMPLIFIED]
        han += sum(1 for ch in text if _is_han(ch))
        found.update(here)
        utts += bool(here)
    top = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:examples]
    return {"chars": sum(found.values()), "cjk_chars": han, "utterances": utts,
            "examples": [f"{t}->{TRADITIONAL_TO_SIMPLIFIED[t]}" for t, _ in top]}


def simplified_converter() -> Callable[[str], str]:
    """A traditional -> simplified converter from the ``opencc`` package, if it is installed."""
    try:
        import opencc  # type: ignore
    except ImportError:
        raise XasrError("converting traditional to simplified characters needs the opencc package "
                        "(pip install opencc); without it the benchmark only reports them") from None
    for config in ("t2s", "t2s.json"):
        try:
            return opencc.OpenCC(config).convert
        except Exception:  # the config name differs between opencc builds
            continue
    raise XasrError("the installed opencc package has no t2s (traditional -> simplified) configuration")


def to_simplified(hyps: Mapping[str, str], convert: Callable[[str], str]) -> Dict[str, str]:
    return {k: convert(v) for k, v in hyps.items()}
